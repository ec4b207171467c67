//go:build unix

package clusternet

// Run under a service manager that wants Type=notify: the notifications
// systemd reads from NOTIFY_SOCKET, in order.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	// notify-primary runs Run(ctx, 2) with rel-serve workers on REL_ADDR.
	primaries["notify-primary"] = func() {
		OnListening(func(w *Worker, a Address) { fmt.Printf("listening %d\n", w.ID()) })
		if err := SetupPrimary(Settings{Env: []string{envHelper + "=rel-serve", "REL_ADDR=" + os.Getenv("REL_ADDR")}}); err != nil {
			fmt.Println("setup:", err)
			return
		}
		fmt.Println("run returned:", Run(context.Background(), 2, WithShutdownTimeout(testTimeout)))
	}
}

func TestRunNotifiesSystemd(t *testing.T) {
	names := map[string]string{"path": filepath.Join(t.TempDir(), "notify")}
	if runtime.GOOS == "linux" {
		names["abstract"] = fmt.Sprintf("@clusternet-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	for kind, name := range names {
		t.Run(kind, func(t *testing.T) {
			sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			next := func(what string) string {
				t.Helper()
				sock.SetReadDeadline(time.Now().Add(testTimeout))
				b := make([]byte, 4096)
				n, err := sock.Read(b)
				if err != nil {
					t.Fatalf("waiting for %s: %v", what, err)
				}
				t.Logf("notified: %q", b[:n])
				return string(b[:n])
			}
			addr := freePort(t)
			p := startPrimary(t, "notify-primary", envNotifySocket+"="+name, "REL_ADDR="+addr)

			ready := next("READY=1")
			if !strings.Contains(ready, "READY=1\n") || !strings.Contains(ready, "STATUS=serving: 2 workers listening\n") {
				t.Fatalf("first notification %q, want READY=1 with its status", ready)
			}
			relServes(t, addr) // ready means serving

			p.cmd.Process.Signal(syscall.SIGHUP)
			reloading := next("RELOADING=1")
			if !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+\nSTATUS=reloading`).MatchString(reloading) {
				t.Fatalf("notification %q, want RELOADING=1 with MONOTONIC_USEC and a status", reloading)
			}
			if reloaded := next("READY=1 after the reload"); !strings.HasPrefix(reloaded, "READY=1\nSTATUS=serving: reloaded\n") {
				t.Fatalf("notification %q, want READY=1 after the reload", reloaded)
			}
			relServes(t, addr)

			p.cmd.Process.Signal(syscall.SIGTERM)
			if stopping := next("STOPPING=1"); !strings.HasPrefix(stopping, "STOPPING=1\nSTATUS=stopping") {
				t.Fatalf("notification %q, want STOPPING=1", stopping)
			}
			p.waitLine(t, "run returned: <nil>")
			if err := p.wait(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRunNotifySocketGone: a service manager that went away costs a log
// line, never the cluster.
func TestRunNotifySocketGone(t *testing.T) {
	addr := freePort(t)
	p := startPrimary(t, "notify-primary", envNotifySocket+"="+filepath.Join(t.TempDir(), "nobody"), "REL_ADDR="+addr)
	p.waitLine(t, "listening")
	relServes(t, addr)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLine(t, "run returned: <nil>")
	if err := p.wait(t); err != nil {
		t.Fatal(err)
	}
}
