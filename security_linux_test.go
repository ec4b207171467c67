//go:build linux

package clusternet

// The case Settings.AllowListen exists for: a primary running as root binds
// a port below 1024 for workers that run as nobody (Settings.Uid/Gid), and
// refuses what AllowListen forbids, so that a compromised worker cannot
// have it bind port 22 or create a socket in /etc. No descriptor of the
// primary's (its own files and listeners, the sockets it binds for other
// workers, their channels) is visible in a worker, nor in a process a
// worker starts. Runs as root (CI does); skipped otherwise.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// secRequest is what the primary asks a "sec-worker".
type secRequest struct {
	Op      string // listen, direct, fds, child
	Network string
	Address string
}

// secReply is a "sec-worker"'s answer.
type secReply struct {
	Err     string
	Uid     int
	Gid     int
	Groups  []int
	Channel string   // the link of the worker's channel descriptor, socket:[inode]
	FDs     []secFD  // the worker's descriptors (or its child's, for "child")
	Lines   []string // what the child printed
}

type secFD struct {
	FD   int
	Link string
}

// secFDs lists this process's descriptors and what they point to, less the
// one that reads the list.
func secFDs() ([]secFD, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var fds []secFD
	for _, n := range names {
		fd, _ := strconv.Atoi(n)
		if fd == int(d.Fd()) {
			continue
		}
		link, err := os.Readlink("/proc/self/fd/" + n)
		if err != nil {
			continue // closed meanwhile
		}
		fds = append(fds, secFD{fd, link})
	}
	return fds, nil
}

func init() {
	primaries["sec-fdlist"] = func() {
		fds, err := secFDs()
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		json.NewEncoder(os.Stdout).Encode(fds)
	}
	helpers["sec-worker"] = func() {
		self := Self()
		var keep []any
		self.OnMessage(func(m Message) {
			var req secRequest
			m.Decode(&req)
			rep := secReply{Uid: os.Getuid(), Gid: os.Getgid()}
			rep.Groups, _ = os.Getgroups()
			errText := func(err error) string {
				if err == nil {
					return ""
				}
				return err.Error()
			}
			switch req.Op {
			case "listen", "direct":
				lc := ListenConfig{Exclusive: req.Op == "direct"}
				ln, err := lc.Listen(context.Background(), req.Network, req.Address)
				rep.Err = errText(err)
				if err == nil {
					keep = append(keep, ln)
					go func() {
						for {
							c, err := ln.Accept()
							if err != nil {
								return
							}
							fmt.Fprintf(c, "uid %d\n", os.Getuid())
							c.Close()
						}
					}()
				}
			case "fds":
				var err error
				rep.FDs, err = secFDs()
				rep.Err = errText(err)
				rc, _ := self.ch.t.(*unixTransport).c.SyscallConn()
				rc.Control(func(fd uintptr) { rep.Channel, _ = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)) })
			case "child":
				exe, _ := os.Executable()
				cmd := exec.Command(exe, "-test.run=^$")
				cmd.Env = append(os.Environ(), envPrimary+"=sec-fdlist")
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				rep.Err = errText(err)
				if err == nil {
					err = json.Unmarshal(out, &rep.FDs)
					rep.Err = errText(err)
				}
			}
			self.Send(rep)
		})
		select {}
	}
}

// secCloseOnExec reports whether this process's descriptor fd is
// close-on-exec.
func secCloseOnExec(fd int) bool {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err != nil || flags&unix.FD_CLOEXEC != 0
}

// secInode returns the inode behind a listener's or connection's descriptor.
func secInode(t *testing.T, c syscall.Conn) string {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) })
	if serr != nil {
		t.Fatal(serr)
	}
	return fmt.Sprintf("socket:[%d]", st.Ino)
}

// secPort returns a free loopback port below 1024.
func secPort(t *testing.T, not ...int) int {
	t.Helper()
	for p := 80; p < 1024; p++ {
		if slices.Contains(not, p) {
			continue
		}
		if ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			ln.Close()
			return p
		}
	}
	t.Skip("no free port below 1024 on 127.0.0.1")
	return 0
}

// secUnprivileged returns the uid and gid of nobody, and a copy of the test
// binary that nobody may run, in a directory of its own (0755, root's),
// removed when the test ends. It skips the test unless it runs as root.
func secUnprivileged(t *testing.T) (uid, gid int, exe, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the primary runs workers as nobody (CI runs as root)")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ = strconv.Atoi(nobody.Uid)
	gid, _ = strconv.Atoi(nobody.Gid)
	dir, err = os.MkdirTemp("", "clusternet-security-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, "clusternet.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(exe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	src.Close()
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return uid, gid, exe, dir
}

func TestSecurityUnprivilegedWorkers(t *testing.T) {
	uid, gid, exe, dir := secUnprivileged(t)
	if start, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(start))); n <= 80 {
			t.Logf("net.ipv4.ip_unprivileged_port_start is %d: unprivileged processes may bind low ports here", n)
		}
	}

	for _, tc := range []struct {
		name   string
		policy Policy
	}{{"none", SchedNone}, {"rr", SchedRR}} {
		t.Run(tc.name, func(t *testing.T) {
			setPolicy(t, tc.policy)
			low := secPort(t, 22)
			high := freePort(t)
			sock := filepath.Join(dir, tc.name+".sock")
			lowAddr := fmt.Sprintf("127.0.0.1:%d", low)
			allowed := map[string]bool{"tcp4|" + lowAddr: true, "tcp4|" + high: true, "unix|" + sock: true}
			var mu sync.Mutex
			var asked []string
			refusal := errors.New("this worker may listen on the configured ports only")
			withSettings(t, Settings{
				Exec: exe,
				Uid:  &uid,
				Gid:  &gid,
				AllowListen: func(w *Worker, network, address string) error {
					mu.Lock()
					asked = append(asked, fmt.Sprintf("worker %d: %s %s", w.ID(), network, address))
					mu.Unlock()
					if !allowed[network+"|"+address] {
						return refusal
					}
					return nil
				},
			})

			// Descriptors the primary inherited open across exec, before
			// the cluster did anything: they pass on to workers by design.
			passed := map[int]string{}
			before, err := secFDs()
			if err != nil {
				t.Fatal(err)
			}
			for _, fd := range before {
				if !secCloseOnExec(fd.FD) {
					passed[fd.FD] = fd.Link
				}
			}
			// Descriptors of the primary's own that no worker may see.
			own, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer own.Close()
			secret, err := os.CreateTemp("", "clusternet-secret-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(secret.Name())
			defer secret.Close()

			a := fork(t, "sec-worker")
			aIn := messages(a)
			rep := ask[secReply](t, a, aIn, secRequest{Op: "fds"})
			if rep.Uid != uid || rep.Gid != gid || slices.Contains(rep.Groups, 0) {
				t.Fatalf("worker runs as uid %d gid %d groups %v; want %d, %d and no root group", rep.Uid, rep.Gid, rep.Groups, uid, gid)
			}
			// On its own, nobody may not bind the low port.
			if rep := ask[secReply](t, a, aIn, secRequest{Op: "direct", Network: "tcp4", Address: lowAddr}); !strings.Contains(rep.Err, "permission denied") {
				t.Errorf("the worker bound %s itself (error %q): the test shows nothing", lowAddr, rep.Err)
			}
			// Through the primary it may.
			if rep := ask[secReply](t, a, aIn, secRequest{Op: "listen", Network: "tcp4", Address: lowAddr}); rep.Err != "" {
				t.Fatalf("listen %s through the primary: %s", lowAddr, rep.Err)
			}
			c, err := net.Dial("tcp4", lowAddr)
			if err != nil {
				t.Fatal(err)
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line != fmt.Sprintf("uid %d\n", uid) {
				t.Errorf("%s answered %q; want the worker running as %d", lowAddr, line, uid)
			}
			// What AllowListen forbids is refused with its error, unbound.
			for _, bad := range []secRequest{
				{Network: "tcp4", Address: "127.0.0.1:22"},
				{Network: "tcp4", Address: "127.0.0.1:ssh"},
				{Network: "tcp", Address: fmt.Sprintf(":%d", low)},
				{Network: "unix", Address: "/etc/clusternet-test.sock"},
			} {
				bad.Op = "listen"
				rep := ask[secReply](t, a, aIn, bad)
				if !strings.Contains(rep.Err, refusal.Error()) {
					t.Errorf("listen %s %s: %q; want the AllowListen refusal", bad.Network, bad.Address, rep.Err)
				}
			}
			if _, err := os.Lstat("/etc/clusternet-test.sock"); err == nil {
				os.Remove("/etc/clusternet-test.sock")
				t.Errorf("a socket file was created in /etc")
			}
			// A socket file gets mode 0600, owned by the primary: other
			// users cannot connect (the worker accepts on it all the same).
			if rep := ask[secReply](t, a, aIn, secRequest{Op: "listen", Network: "unix", Address: sock}); rep.Err != "" {
				t.Fatalf("listen %s: %s", sock, rep.Err)
			}
			if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
				t.Errorf("socket file %s: %v %v; want a socket with mode 0600", sock, fi.Mode(), err)
			}

			b := fork(t, "sec-worker")
			bIn := messages(b)
			if rep := ask[secReply](t, b, bIn, secRequest{Op: "listen", Network: "tcp4", Address: high}); rep.Err != "" {
				t.Fatalf("worker %d: listen %s: %s", b.ID(), high, rep.Err)
			}
			cw := fork(t, "sec-worker")
			cIn := messages(cw)

			// Every socket the primary holds, by inode, and those a worker
			// may hold: the sockets it was given (SchedNone), its end of its
			// handoff sockets (SchedRR), its channel.
			primaryFDs, err := secFDs()
			if err != nil {
				t.Fatal(err)
			}
			held := map[string]bool{secret.Name(): true}
			for _, fd := range primaryFDs {
				if strings.HasPrefix(fd.Link, "socket:") || strings.HasPrefix(fd.Link, "pipe:") {
					held[fd.Link] = true
				}
				if !secCloseOnExec(fd.FD) && passed[fd.FD] != fd.Link {
					t.Errorf("the primary's descriptor %d -> %s is not close-on-exec", fd.FD, fd.Link)
				}
			}
			granted := map[*Worker]map[string]bool{a: {}, b: {}, cw: {}}
			cluster.mu.Lock()
			for _, sa := range cluster.addrs {
				sa.mu.Lock()
				for _, sub := range sa.subs {
					switch {
					case granted[sub.w] == nil:
					case sa.mode == modeShared:
						granted[sub.w][secInode(t, sa.sock)] = true
					case sub.handoff: // its end of its own handoff socket
						link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", sub.peer))
						if err != nil {
							t.Fatal(err)
						}
						granted[sub.w][link] = true
					}
				}
				sa.mu.Unlock()
			}
			cluster.mu.Unlock()
			channels := map[*Worker]string{}
			ins := map[*Worker]<-chan Message{a: aIn, b: bIn, cw: cIn}
			reps := map[*Worker]secReply{}
			for _, w := range []*Worker{a, b, cw} {
				reps[w] = ask[secReply](t, w, ins[w], secRequest{Op: "fds"})
				channels[w] = reps[w].Channel
				if reps[w].Err != "" || !strings.HasPrefix(reps[w].Channel, "socket:[") {
					t.Fatalf("worker %d: descriptors: %s, channel %q", w.ID(), reps[w].Err, reps[w].Channel)
				}
			}
			// leaked says what fd is if a process should not have it:
			// the primary's, or another worker's channel. Standard input,
			// output and error are given; descriptors the primary itself
			// inherited open across exec pass on, as with os/exec.
			leaked := func(fd secFD, w *Worker) string {
				switch {
				case fd.FD <= 2 || passed[fd.FD] == fd.Link:
					return ""
				case held[fd.Link]:
					return "the primary's"
				}
				for o, ch := range channels {
					if o != w && fd.Link == ch {
						return fmt.Sprintf("worker %d's channel", o.ID())
					}
				}
				return ""
			}
			for _, w := range []*Worker{a, b, cw} {
				var seen []string
				for _, fd := range reps[w].FDs {
					if fd.Link == channels[w] || granted[w][fd.Link] {
						continue
					}
					if why := leaked(fd, w); why != "" {
						seen = append(seen, fmt.Sprintf("%d -> %s (%s)", fd.FD, fd.Link, why))
					}
				}
				t.Logf("worker %d (uid %d) has %d descriptors: %v", w.ID(), reps[w].Uid, len(reps[w].FDs), reps[w].FDs)
				if len(seen) > 0 {
					t.Errorf("worker %d sees descriptors it was not given: %v", w.ID(), seen)
				}
				child := ask[secReply](t, w, ins[w], secRequest{Op: "child"})
				if child.Err != "" {
					t.Fatalf("worker %d's child: %s", w.ID(), child.Err)
				}
				for _, fd := range child.FDs {
					// Nothing of the worker's either: its channel, its sockets.
					if why := leaked(fd, nil); why != "" || fd.FD > 2 && passed[fd.FD] != fd.Link && (strings.HasPrefix(fd.Link, "socket:") || strings.HasPrefix(fd.Link, "pipe:")) {
						t.Errorf("a process started by worker %d inherited descriptor %d -> %s %s", w.ID(), fd.FD, fd.Link, why)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("AllowListen was asked: %v", asked)
			if want := 7; len(asked) != want {
				t.Errorf("AllowListen was asked %d times, want %d", len(asked), want)
			}
		})
	}
}
