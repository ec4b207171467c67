package clusternet

// Unix domain sockets: relative paths and the life of the socket file.

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// lnSetDir sets the working directory later forks give their workers, until
// t ends.
func lnSetDir(t testing.TB, dir string) {
	cluster.mu.Lock()
	old := cluster.settings
	cluster.settings.Dir = dir
	cluster.mu.Unlock()
	t.Cleanup(func() {
		cluster.mu.Lock()
		cluster.settings = old
		cluster.mu.Unlock()
	})
}

// TestListenUnixRelativePath: a relative socket path is relative to the
// worker's working directory, not the primary's, and workers in different
// directories get different sockets.
func TestListenUnixRelativePath(t *testing.T) {
	require(t, "unix")
	nc := lnNets[2]
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			const rel = "rel.sock"
			if _, err := os.Stat(rel); err == nil {
				t.Fatalf("%s exists in the primary's directory before the test", rel)
			}
			var ws []*lnWorker
			var dirs []string
			for range 2 {
				dir := filepath.Dir(lnSockPath(t))
				lnSetDir(t, dir)
				ws = append(ws, lnStart(t, "unix", rel))
				dirs = append(dirs, dir)
			}
			if _, err := os.Stat(rel); err == nil {
				os.Remove(rel)
				t.Errorf("a worker's relative socket path was bound in the primary's directory")
			}
			for i, w := range ws {
				want := filepath.Join(dirs[i], rel)
				gotFI, err1 := os.Stat(w.ready.Addr)
				wantFI, err2 := os.Stat(want)
				if err1 != nil || err2 != nil || !os.SameFile(gotFI, wantFI) || !filepath.IsAbs(w.ready.Addr) {
					t.Errorf("worker %d in %s listens at %q (%v), want %q (%v)", w.ID(), dirs[i], w.ready.Addr, err1, want, err2)
					continue
				}
				if a := w.mb.wait(t, "listening").addr; a.Host != w.ready.Addr || a.Type != Unix {
					t.Errorf("worker %d: listening event for %+v, want the absolute path %q", w.ID(), a, w.ready.Addr)
				}
				tg := lnTargetFor(nc, want)
				lnUntilAll(t, tg, []int{w.ID()}, 5)
			}
		})
	}
}

// TestListenUnixSocketFile: the socket file outlives one worker's Close or
// death, and is removed when the last worker stops listening or the cluster
// disconnects.
func TestListenUnixSocketFile(t *testing.T) {
	require(t, "unix")
	nc := lnNets[2]
	for _, p := range lnPolicies {
		for _, how := range []string{"close", "kill", "disconnect"} {
			t.Run(p.String()+"/"+how, func(t *testing.T) {
				lnUsePolicy(t, p)
				lnCheckFDs(t)
				path := nc.address(t)
				ws := lnStartN(t, 2, "unix", path)
				tg := lnTargetFor(nc, path)
				exists := func(when string, want bool) {
					t.Helper()
					_, err := os.Stat(path)
					if want && err != nil {
						t.Errorf("socket file %s: %v", when, err)
					}
					if !want && !errors.Is(err, os.ErrNotExist) {
						t.Errorf("socket file %s: %v, want it removed", when, err)
					}
				}
				stop := func(w *lnWorker) {
					t.Helper()
					switch how {
					case "close":
						w.ask(t, "close", "closed")
					case "kill":
						if err := w.Kill(os.Kill); err != nil {
							t.Fatal(err)
						}
						waitDone(t, w.Worker)
					}
				}
				if how == "disconnect" {
					exists("while workers listen", true)
					if err := Disconnect(testContext(t)); err != nil {
						t.Fatalf("Disconnect: %v", err)
					}
					for _, w := range ws {
						if !w.IsDead() || !w.ExitedAfterDisconnect() {
							t.Errorf("worker %d after Disconnect: dead %v, exited after disconnect %v", w.ID(), w.IsDead(), w.ExitedAfterDisconnect())
						}
					}
					exists("after the cluster disconnected", false)
					return
				}
				stop(ws[0])
				exists("after one of two workers stopped listening", true)
				lnUntilAll(t, tg, []int{ws[1].ID()}, 5)
				stop(ws[1])
				exists("after the last worker stopped listening", false)
			})
		}
	}
}
