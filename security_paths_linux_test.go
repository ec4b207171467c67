//go:build linux

package clusternet

// A worker that runs as nobody and owns the directory its socket file goes
// in (the usual runtime directory) attacks the root primary through the
// path: it races symbolic links against the primary's bind, chmod and
// unlink, moves the socket's directory away, swaps the socket file for one
// of its own, and sends a relative path. Whatever it does, the primary
// binds, sets the mode of, and removes nothing but the socket it created,
// in the directory the path named when it was asked. Runs as root (CI
// does); skipped otherwise. See docs/security.md.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spRequest is what the primary asks an "sp-hostile" worker to do.
type spRequest struct {
	Op     string // race-file, race-dir, escape, replace, relative
	Dir    string // the worker's own directory
	Target string // what the worker points its links at
	For    time.Duration
}

// spReply is an "sp-hostile" worker's answer.
type spReply struct {
	Err            string
	Tries, Granted int
	Refusal        string // symlink: the primary's answer to a raw request
	Loop           bool   // symlink: errors.Is(refusal, ELOOP)
	Addr           string // symlink: where Listen listens
}

func init() {
	helpers["sp-hostile"] = func() {
		self := Self()
		self.OnMessage(func(m Message) {
			var req spRequest
			m.Decode(&req)
			rep := spHostile(req)
			self.Send(rep)
		})
		select {}
	}
}

// spListen asks the primary for a Unix socket at path as a hostile worker
// does, past Listen (which would make the path absolute and resolve its
// links first), and gives back the socket it gets.
func spListen(path string) (uint32, error) {
	w := Self()
	rep, h, err := w.listeners.request(context.Background(), w, listenRequest{Network: "unix", Address: path})
	if err != nil {
		return 0, err
	}
	if h != nil {
		closeHandles([]sysHandle{*h})
	}
	return rep.Key, nil
}

// spUnlisten leaves an address, and returns once the primary has acted on
// it: the primary handles a worker's frames in order, and answers the
// listen request that follows only after it.
func spUnlisten(key uint32) {
	w := Self()
	w.listeners.unlisten(w, key)
	w.listeners.request(context.Background(), w, listenRequest{Network: "sync", Address: "sync"})
}

func spHostile(req spRequest) spReply {
	var rep spReply
	fail := func(err error) spReply { rep.Err = err.Error(); return rep }
	switch req.Op {
	case "race-file", "race-dir":
		// One goroutine swaps, the other listens and leaves, for req.For.
		path := filepath.Join(req.Dir, "s.sock")
		swap := func() {
			os.Remove(path)
			os.Symlink(req.Target, path)
		}
		if req.Op == "race-dir" {
			sub, real := filepath.Join(req.Dir, "sub"), filepath.Join(req.Dir, "sub.real")
			if err := os.Mkdir(real, 0o755); err != nil {
				return fail(err)
			}
			path = filepath.Join(sub, "s.sock")
			swap = func() {
				os.Rename(real, sub) // the real directory
				os.Rename(sub, real)
				os.Symlink(filepath.Dir(req.Target), sub) // a link to root's
				os.Remove(sub)
			}
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					swap()
				}
			}
		}()
		for deadline := time.Now().Add(req.For); time.Now().Before(deadline); {
			rep.Tries++
			if key, err := spListen(path); err == nil {
				rep.Granted++
				spUnlisten(key)
			}
		}
		close(stop)
		wg.Wait()
	case "escape":
		// Listen in d, move d away, put a link to root's directory in its
		// place, and leave: the primary's unlink must not follow.
		d := filepath.Join(req.Dir, "d")
		if err := os.Mkdir(d, 0o755); err != nil {
			return fail(err)
		}
		key, err := spListen(filepath.Join(d, filepath.Base(req.Target)))
		if err != nil {
			return fail(err)
		}
		if err := os.Rename(d, d+".away"); err != nil {
			return fail(err)
		}
		if err := os.Symlink(filepath.Dir(req.Target), d); err != nil {
			return fail(err)
		}
		spUnlisten(key)
	case "replace":
		// Move the primary's socket aside and put a file of the worker's
		// own in its place: the primary must not remove it.
		path := filepath.Join(req.Dir, "x.sock")
		key, err := spListen(path)
		if err != nil {
			return fail(err)
		}
		if err := os.Rename(path, path+".moved"); err != nil {
			return fail(err)
		}
		if err := os.WriteFile(path, []byte("mine"), 0o644); err != nil {
			return fail(err)
		}
		spUnlisten(key)
	case "relative":
		// A relative path, from the worker's own directory.
		if err := os.Chdir(req.Dir); err != nil {
			return fail(err)
		}
		key, err := spListen("rel.sock")
		if err != nil {
			return fail(err)
		}
		rep.Granted = 1
		if _, err := os.Lstat("rel.sock"); err != nil {
			return fail(fmt.Errorf("no socket where the worker asked for it: %w", err))
		}
		spUnlisten(key)
		if _, err := os.Lstat("rel.sock"); !errors.Is(err, fs.ErrNotExist) {
			return fail(fmt.Errorf("the socket is still there after the worker left: %v", err))
		}
	case "symlink":
		// A path through a link: refused as a raw request, with why;
		// through Listen, which resolves the link first, bound.
		link := filepath.Join(req.Dir, "link")
		if err := os.Symlink(req.Target, link); err != nil {
			return fail(err)
		}
		path := filepath.Join(link, "l.sock")
		if _, err := spListen(path); err != nil {
			rep.Refusal, rep.Loop = err.Error(), errors.Is(err, unix.ELOOP)
		}
		ln, err := Listen("unix", path)
		if err != nil {
			return fail(err)
		}
		rep.Addr = ln.Addr().String()
		ln.Close()
	default:
		return fail(fmt.Errorf("unknown op %q", req.Op))
	}
	return rep
}

// spSetup makes a directory that nobody owns, for the hostile worker, and a
// victim file of root's with its directory (0700), and forks the hostile
// worker as nobody. AllowListen lets it listen on exactly the paths in
// allowed, below its directory, and records what it was asked.
func spSetup(t *testing.T, socketMode os.FileMode, allowed ...string) (w *Worker, in <-chan Message, own, victim string, asked func() []string) {
	t.Helper()
	uid, gid, exe, dir := secUnprivileged(t)
	setPolicy(t, SchedNone)
	own = filepath.Join(dir, "own")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(own, uid, gid); err != nil {
		t.Fatal(err)
	}
	victimDir := t.TempDir()
	if err := os.Chmod(victimDir, 0o700); err != nil {
		t.Fatal(err)
	}
	victim = filepath.Join(victimDir, "important.conf")
	if err := os.WriteFile(victim, []byte("root's\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	withSettings(t, Settings{
		Exec:       exe,
		Uid:        &uid,
		Gid:        &gid,
		SocketMode: socketMode,
		AllowListen: func(w *Worker, network, address string) error {
			mu.Lock()
			seen = append(seen, network+" "+address)
			mu.Unlock()
			for _, a := range allowed {
				if network == "unix" && address == filepath.Join(own, a) {
					return nil
				}
			}
			return errors.New("not on the allow-list")
		},
	})
	w = fork(t, "sp-hostile")
	return w, messages(w), own, victim, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// spAsk has the hostile worker do req and returns its reply, which must
// not be an error.
func spAsk(t *testing.T, w *Worker, in <-chan Message, req spRequest) spReply {
	t.Helper()
	rep := ask[spReply](t, w, in, req)
	if rep.Err != "" {
		t.Fatalf("%s: %s", req.Op, rep.Err)
	}
	return rep
}

// spVictimIntact fails t unless the victim file is as it was made, and
// nothing else is in its directory.
func spVictimIntact(t *testing.T, victim string) {
	t.Helper()
	fi, err := os.Lstat(victim)
	if err != nil {
		t.Fatalf("root's file %s: %v", victim, err)
	}
	if fi.Mode() != 0o644 {
		t.Errorf("root's file %s has mode %v; want -rw-r--r--", victim, fi.Mode())
	}
	if b, _ := os.ReadFile(victim); string(b) != "root's\n" {
		t.Errorf("root's file %s now holds %q", victim, b)
	}
	names, _ := os.ReadDir(filepath.Dir(victim))
	if len(names) != 1 {
		t.Errorf("root's directory holds %v; want only %s", names, filepath.Base(victim))
	}
}

// The hostile worker swaps the socket's name for a link to root's file, in
// a loop against its own listens: nothing but the primary's own socket is
// ever chmod-ed, with a mode that loosens (0666) as with the default.
func TestSecurityPathRaceFile(t *testing.T) {
	for _, mode := range []os.FileMode{0o666, 0} {
		t.Run(fmt.Sprintf("mode-%o", mode), func(t *testing.T) {
			w, in, own, victim, _ := spSetup(t, mode, "s.sock")
			rep := spAsk(t, w, in, spRequest{Op: "race-file", Dir: own, Target: victim, For: 1500 * time.Millisecond})
			t.Logf("%d listens, %d granted, while the worker swapped the name for a link", rep.Tries, rep.Granted)
			if rep.Granted == 0 {
				t.Errorf("no listen was granted in %d: the race never reached the primary's bind", rep.Tries)
			}
			spVictimIntact(t, victim)
		})
	}
}

// The same with a directory of the path swapped for a link to root's
// directory: nothing is bound, created or chmod-ed there.
func TestSecurityPathRaceDir(t *testing.T) {
	w, in, own, victim, _ := spSetup(t, 0o666, "sub/s.sock")
	rep := spAsk(t, w, in, spRequest{Op: "race-dir", Dir: own, Target: victim, For: 1500 * time.Millisecond})
	t.Logf("%d listens, %d granted, while the worker swapped the directory for a link", rep.Tries, rep.Granted)
	if rep.Granted == 0 {
		t.Errorf("no listen was granted in %d: the race never reached the primary's bind", rep.Tries)
	}
	spVictimIntact(t, victim)
}

// The worker moves the socket's directory away and links root's directory
// in its place before it leaves: the primary removes its own socket, where
// it now is, and not root's file of the same name.
func TestSecurityPathEscapeUnlink(t *testing.T) {
	w, in, own, victim, _ := spSetup(t, 0, "d/important.conf")
	spAsk(t, w, in, spRequest{Op: "escape", Dir: own, Target: victim})
	spVictimIntact(t, victim)
	moved := filepath.Join(own, "d.away", filepath.Base(victim))
	if _, err := os.Lstat(moved); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the primary's socket, moved to %s with its directory, was not removed: %v", moved, err)
	}
}

// The worker moves the primary's socket aside and puts a file of its own
// under the name: the primary leaves that file alone.
func TestSecurityPathReplacedSocket(t *testing.T) {
	w, in, own, _, _ := spSetup(t, 0, "x.sock")
	spAsk(t, w, in, spRequest{Op: "replace", Dir: own})
	if b, err := os.ReadFile(filepath.Join(own, "x.sock")); err != nil || string(b) != "mine" {
		t.Errorf("the worker's own x.sock: %q, %v; want it untouched", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(own, "x.sock.moved")); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Errorf("x.sock.moved: %v, %v; want the primary's socket, where the worker moved it", fi, err)
	}
}

// A relative path is the worker's, resolved against its working directory,
// and AllowListen sees the path that is bound.
func TestSecurityPathRelative(t *testing.T) {
	w, in, own, _, asked := spSetup(t, 0, "rel.sock")
	spAsk(t, w, in, spRequest{Op: "relative", Dir: own})
	want := "unix " + filepath.Join(own, "rel.sock")
	if got := asked(); !slices.Contains(got, want) {
		t.Errorf("AllowListen was asked %q; want %q", got, want)
	}
	if _, err := os.Lstat("rel.sock"); !errors.Is(err, fs.ErrNotExist) {
		os.Remove("rel.sock")
		t.Errorf("a socket was made in the primary's working directory")
	}
}

// A symbolic link on a socket path: the primary refuses to follow it, and
// says so; Listen resolves it in the worker, so that it works.
func TestListenUnixSymlinkedDir(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	w := fork(t, "sp-hostile")
	in := messages(w)
	rep := spAsk(t, w, in, spRequest{Op: "symlink", Dir: dir, Target: real})
	t.Logf("refused: %s", rep.Refusal)
	if !rep.Loop || !strings.Contains(rep.Refusal, "symbolic link") {
		t.Errorf("a raw request through a link: %q (ELOOP %v); want ELOOP, saying why", rep.Refusal, rep.Loop)
	}
	if want := filepath.Join(real, "l.sock"); rep.Addr != want {
		t.Errorf("Listen through the link listens at %q; want %q", rep.Addr, want)
	}
	if _, err := os.Lstat(filepath.Join(real, "l.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket file outlived its listener: %v", err)
	}
}

func init() {
	// sp-deep makes a directory whose path is longer than sun_path, moves
	// into it, and listens there on a relative name through Listen.
	helpers["sp-deep"] = func() {
		self := Self()
		self.OnMessage(func(m Message) {
			var dir string
			m.Decode(&dir)
			err := os.MkdirAll(dir, 0o755)
			if err == nil {
				err = os.Chdir(dir)
			}
			var ln net.Listener
			if err == nil {
				ln, err = Listen("unix", "deep.sock")
			}
			if err != nil {
				self.Send("error: " + err.Error())
				return
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("deep\n"))
					c.Close()
				}
			}()
			self.Send(ln.Addr().String())
		})
		select {}
	}
}

// A socket whose absolute path is longer than the 108 bytes of sun_path
// binds: the primary binds its name relative to its directory (Node's
// test-cluster-net-listen-relative-path).
func TestListenUnixLongPath(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, strings.Repeat("d", 60), strings.Repeat("e", 60))
	w := fork(t, "sp-deep")
	in := messages(w)
	if err := w.Send(dir); err != nil {
		t.Fatal(err)
	}
	var got string
	recv(t, in, "the worker to listen").Decode(&got)
	want := filepath.Join(dir, "deep.sock")
	if got != want {
		t.Fatalf("the worker listens at %q; want %q", got, want)
	}
	// Dial through the directory's descriptor: the path is too long.
	d, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(d)
	c, err := net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d/deep.sock", d))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, 5)
	if _, err := c.Read(b); err != nil || string(b) != "deep\n" {
		t.Errorf("read %q, %v; want the worker's answer", b, err)
	}
}

// The cost of binding a socket file safely (a directory opened with
// openat2, a thread of its own for the bind) against net.Listen by path,
// side by side. Once per address, not per connection.
func BenchmarkBindSocketFile(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "b.sock")
	b.Run("net.Listen", func(b *testing.B) {
		for b.Loop() {
			ln, err := net.Listen("unix", path)
			if err != nil {
				b.Fatal(err)
			}
			ln.Close()
		}
	})
	b.Run("bindSocketFile", func(b *testing.B) {
		for b.Loop() {
			s, err := bindSocketFile(path, 0o600, 0)
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
		}
	})
}
