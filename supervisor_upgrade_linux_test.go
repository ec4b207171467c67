package clusternet

// Upgrade's tests: a cluster whose primary is upgraded again and again under
// load, with a new binary moved over the old between upgrades, and each way
// an upgrade rolls back. The cluster runs under a shim, the test binary as a
// child subreaper: every primary of the cluster is its child in turn (a new
// primary's parent exits), and the shim exits once all of them and all the
// workers are gone, so that the test sees both what exited and that nothing
// is left. Linux only: the shim needs PR_SET_CHILD_SUBREAPER.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	helpers["up-serve"] = upServe
	primaries["up-primary"] = upPrimary
	primaries["up-shim"] = upShim
}

// upServe answers HTTP requests on ADDR (tcp4), and on the Unix socket
// file UNIX when it is set, with "worker <id> of <primary pid>".
func upServe() {
	var lns []net.Listener
	for _, a := range [][2]string{{"tcp4", os.Getenv("ADDR")}, {"unix", os.Getenv("UNIX")}} {
		if a[1] == "" {
			continue
		}
		ln, err := Listen(a[0], a[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "up-serve:", err)
			os.Exit(1)
		}
		lns = append(lns, ln)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "worker %d of %d", Self().ID(), os.Getppid())
	})}
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Go(func() { ServeHTTP(srv, ln) })
	}
	wg.Wait()
	select {} // the package exits once the worker has drained
}

// upPrimary runs a cluster of 2 up-serve workers with Run, logging to its
// standard output. It is the program Upgrade starts again, in the release
// that the file UP_RELEASE names:
//
//	good        as above
//	crash       exits with code 1 at start
//	nolisten    its workers never listen
//	version N   speaks handover version N
func upPrimary() {
	os.Setenv(envPrimary, "up-primary") // an upgrade starts this program again as it was started
	release, _ := os.ReadFile(os.Getenv("UP_RELEASE"))
	f := strings.Fields(string(release))
	helper := "up-serve"
	switch {
	case len(f) == 0 || f[0] == "good":
	case f[0] == "crash":
		fmt.Fprintln(os.Stderr, "up-primary: this release crashes at start")
		os.Exit(1)
	case f[0] == "nolisten":
		helper = "sup-idle"
	case f[0] == "version" && len(f) == 2:
		v, _ := strconv.Atoi(f[1])
		upgradeSpoken = uint32(v)
	default:
		fmt.Fprintf(os.Stderr, "up-primary: unknown release %q\n", release)
		os.Exit(3)
	}
	if err := SetupPrimary(Settings{Env: []string{envHelper + "=" + helper}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// SIGUSR1 calls Upgrade itself, beside Run's SIGUSR2.
	direct := make(chan os.Signal, 1)
	signal.Notify(direct, syscall.SIGUSR1)
	go func() {
		for range direct {
			fmt.Printf("direct upgrade: %v\n", Upgrade(context.Background()))
		}
	}()
	var out io.Writer = os.Stdout
	if path := os.Getenv("UP_LOG"); path != "" {
		// Every primary's log, also in a file the test shows on failure.
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			out = io.MultiWriter(os.Stdout, f)
		}
	}
	OnExit(func(w *Worker, st ExitStatus) {
		slog.New(slog.NewTextHandler(out, nil)).Info("worker exit", "primary", os.Getpid(), "id", w.ID(), "status", st.String())
	})
	log := slog.New(slog.NewTextHandler(out, nil)).With("primary", os.Getpid())
	err := Run(context.Background(), 2, WithLogger(log), WithPIDFile(os.Getenv("UP_PIDFILE")),
		WithListenTimeout(3*time.Second), WithShutdownTimeout(10*time.Second))
	fmt.Printf("up-primary %d: Run returned: %v\n", os.Getpid(), err)
	if err != nil {
		os.Exit(1)
	}
}

// upShim is a child subreaper that starts up-primary from UP_EXE, reaps
// every process that comes to it and prints "shim: reaped <pid> <status>"
// for each, and exits once it has no child left. A SIGTERM goes to the
// primary in the PID file. With UP_ACTIVATE it binds a TCP socket and
// passes it as systemd does (descriptor 3, LISTEN_FDS=1, LISTEN_PID the
// primary's pid, LISTEN_FDNAMES=web), with ADDR its address, which it prints:
// "shim: activated <addr>"; it keeps its own copy open, so that a primary
// that bound the address afresh would fail.
func upShim() {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "up-shim:", err)
		os.Exit(1)
	}
	exe := os.Getenv("UP_EXE")
	env := append(os.Environ(), envPrimary+"=up-primary")
	files := []*os.File{os.Stdin, os.Stdout, os.Stderr}
	path, args := exe, []string{exe, "-test.run=^$"}
	if os.Getenv("UP_ACTIVATE") != "" {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "up-shim:", err)
			os.Exit(1)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			fmt.Fprintln(os.Stderr, "up-shim:", err)
			os.Exit(1)
		}
		files = append(files, f)
		env = append(env, "ADDR="+ln.Addr().String(), "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
		// sh sets LISTEN_PID to its own pid, which exec keeps.
		path, args = "/bin/sh", []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run=^$`, exe}
		fmt.Println("shim: activated", ln.Addr())
	}
	p, err := os.StartProcess(path, args, &os.ProcAttr{Env: env, Files: files})
	if err != nil {
		fmt.Fprintln(os.Stderr, "up-shim:", err)
		os.Exit(1)
	}
	first := p.Pid
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for range sigs {
			pid, err := readPID(os.Getenv("UP_PIDFILE"))
			if err != nil {
				pid = first
			}
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break // ECHILD: every process of the cluster is gone
		}
		status := "exit code " + strconv.Itoa(ws.ExitStatus())
		if ws.Signaled() {
			status = "signal " + ws.Signal().String()
		}
		fmt.Printf("shim: reaped %d %s\n", pid, status)
	}
	os.Exit(0)
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// upCluster is a cluster under up-shim, run from a copy of the test binary
// that the test replaces as a deploy would.
type upCluster struct {
	shim    *primary
	dir     string
	app     string // the program, replaced by release
	rel     string // the release file
	pidFile string
	addr    string

	forwarded []string        // per upgrade, the connections the old primary had accepted and handed over
	took      []time.Duration // per upgrade, from the signal to the old primary's last word
}

// startUpCluster starts a cluster of up-serve workers on a free port (or on
// socket activation's socket, with UP_ACTIVATE=1 in env) and waits until
// it serves.
func startUpCluster(t *testing.T, env ...string) *upCluster {
	t.Helper()
	dir := t.TempDir()
	c := &upCluster{dir: dir, app: filepath.Join(dir, "app"), rel: filepath.Join(dir, "release"), pidFile: filepath.Join(dir, "pid")}
	c.release(t, "good")
	activate := false
	for _, kv := range env {
		activate = activate || kv == "UP_ACTIVATE=1"
	}
	if !activate {
		c.addr = freePort(t)
		env = append(env, "ADDR="+c.addr)
	}
	logPath := filepath.Join(dir, "log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("the primaries' log:\n%s", b)
		}
	})
	c.shim = startPrimary(t, "up-shim", append(env, "UP_EXE="+c.app, "UP_RELEASE="+c.rel, "UP_PIDFILE="+c.pidFile, "UP_LOG="+logPath)...)
	if activate {
		c.addr = strings.TrimPrefix(c.shim.waitLine(t, "shim: activated "), "shim: activated ")
	}
	c.pid(t)
	deadline := time.Now().Add(testTimeout)
	for {
		if _, err := get(&http.Client{Timeout: time.Second}, "http://"+c.addr+"/"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster does not serve %s", c.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

// release moves a new copy of the test binary over the program, as a
// deploy does, and names the release it is.
func (c *upCluster) release(t *testing.T, name string) {
	t.Helper()
	if err := os.WriteFile(c.rel, []byte(name), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := c.app + ".new"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.app); err != nil {
		t.Fatal(err)
	}
}

// pid waits until the PID file names a primary, and returns its pid.
func (c *upCluster) pid(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		if pid, err := readPID(c.pidFile); err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatal("no PID file")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upgrade sends SIGUSR2 to the primary and waits until it has handed over
// and exited with code 0; it returns the new primary's pid.
func (c *upCluster) upgrade(t *testing.T) int {
	t.Helper()
	old := c.pid(t)
	start := time.Now()
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	line := c.shim.waitLine(t, `msg="handed over"`)
	c.took = append(c.took, time.Since(start).Round(time.Millisecond))
	_, n, _ := strings.Cut(line, " connections=")
	c.forwarded = append(c.forwarded, n)
	c.shim.waitLine(t, fmt.Sprintf("shim: reaped %d exit code 0", old))
	pid := c.pid(t)
	if pid == old {
		t.Fatalf("the PID file still names %d after its upgrade", old)
	}
	return pid
}

// failedUpgrade sends SIGUSR2 to the primary and returns the error its
// upgrade logged; the primary must still be in the PID file.
func (c *upCluster) failedUpgrade(t *testing.T) string {
	t.Helper()
	old := c.pid(t)
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	line := c.shim.waitLine(t, "upgrade failed")
	if pid := c.pid(t); pid != old {
		t.Fatalf("after a failed upgrade the PID file names %d, not %d", pid, old)
	}
	return line
}

// underLoad runs during while new-connection and keep-alive clients send
// GETs to addr, and fails the test if any request failed.
func underLoad(t *testing.T, addr string, during func()) {
	t.Helper()
	stop := make(chan struct{})
	type result struct {
		served, failed int
		errs           []string
	}
	results := make(chan [2]result, 1)
	go func() {
		var r [2]result
		var wg sync.WaitGroup
		for i, keepAlive := range []bool{false, true} {
			wg.Go(func() { r[i].served, r[i].failed, r[i].errs = httpLoad("http://"+addr+"/", "GET", 3, keepAlive, stop) })
		}
		wg.Wait()
		results <- r
	}()
	func() {
		defer close(stop)
		during()
	}()
	r := <-results
	t.Logf("new connection per request: %d served, %d failed %v; keep-alive: %d served, %d failed %v",
		r[0].served, r[0].failed, r[0].errs, r[1].served, r[1].failed, r[1].errs)
	if r[0].failed != 0 || r[1].failed != 0 || r[0].served == 0 || r[1].served == 0 {
		t.Errorf("requests failed, or none were served")
	}
}

// stopUpCluster stops the cluster with SIGTERM and waits until every one of
// its processes is gone.
func (c *upCluster) stop(t *testing.T) {
	t.Helper()
	pid := c.pid(t)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.shim.wait(t); err != nil {
		t.Fatalf("shim: %v", err)
	}
	if _, err := os.Stat(c.pidFile); !os.IsNotExist(err) {
		t.Errorf("the PID file is still there after the shutdown: %v", err)
	}
}

// TestUpgradeUnderLoad upgrades the primary three times under load, a new
// binary moved over the program before each: no request fails, and each
// old primary exits with code 0 once the new one serves.
func TestUpgradeUnderLoad(t *testing.T) {
	for _, p := range allPolicies {
		t.Run(p.name, func(t *testing.T) {
			c := startUpCluster(t, envPolicy+"="+policyName(p.policy))
			pids := []int{c.pid(t)}
			underLoad(t, c.addr, func() {
				for range 3 {
					c.release(t, "good")
					pids = append(pids, c.upgrade(t))
				}
			})
			t.Logf("primaries: %v; per upgrade, accepted connections the old primary handed over: %v, time to hand over and drain: %v", pids, c.forwarded, c.took)
			c.stop(t)
		})
	}
}

// policyName is the CLUSTERNET_SCHED_POLICY value for p.
func policyName(p Policy) string {
	switch p {
	case SchedNone:
		return "none"
	case SchedReusePort:
		return "reuseport"
	}
	return "rr"
}

// TestUpgradeRollback tries releases that fail each way, under load: each
// is killed, the primary goes on serving, and a good release then upgrades.
func TestUpgradeRollback(t *testing.T) {
	c := startUpCluster(t)
	first := c.pid(t)
	underLoad(t, c.addr, func() {
		for _, tc := range []struct{ release, want string }{
			{"crash", "exited before it said which handover version it speaks: exit code 1"},
			{"nolisten", "was not ready within 3s before its workers listened"},
			{"version 99", "it speaks handover version 99, this primary 1"},
		} {
			c.release(t, tc.release)
			line := c.failedUpgrade(t)
			if !strings.Contains(line, tc.want) {
				t.Errorf("release %q: the upgrade failed with %s, want %q", tc.release, line, tc.want)
			}
		}
		c.release(t, "good")
		if pid := c.upgrade(t); pid == first {
			t.Fatal("no new primary")
		}
	})
	c.stop(t)
}

// TestUpgradeKeepsSocketsAndTellsSystemd upgrades a socket-activated
// cluster that also listens on a Unix socket file, under NOTIFY_SOCKET: the
// new primaries serve on socket activation's socket (the shim holds a copy,
// so a fresh bind would fail), the socket file is the same file all along
// and is removed only at the end, systemd hears MAINPID and READY=1 at each
// takeover, and a second upgrade while one is under way is refused.
func TestUpgradeKeepsSocketsAndTellsSystemd(t *testing.T) {
	dir := t.TempDir()
	notifyPath, sockPath := filepath.Join(dir, "notify"), filepath.Join(dir, "web.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	next := func(want string) string {
		t.Helper()
		sock.SetReadDeadline(time.Now().Add(testTimeout))
		b := make([]byte, 4096)
		n, err := sock.Read(b)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if !strings.HasPrefix(string(b[:n]), want) {
			t.Fatalf("notified %q, want %q first", b[:n], want)
		}
		return string(b[:n])
	}
	c := startUpCluster(t, "UP_ACTIVATE=1", "UNIX="+sockPath, envNotifySocket+"="+notifyPath)
	next("READY=1\n")
	unixClient := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sockPath)
		},
	}}
	var st syscall.Stat_t
	if err := syscall.Lstat(sockPath, &st); err != nil {
		t.Fatal(err)
	}
	// The socket file must stay where it is, the same file, through the
	// upgrades: watch it.
	watchDone, stopWatch := make(chan string, 1), make(chan struct{})
	go func() {
		var bad string
		for {
			select {
			case <-stopWatch:
				watchDone <- bad
				return
			case <-time.After(time.Millisecond):
			}
			var now syscall.Stat_t
			if err := syscall.Lstat(sockPath, &now); err != nil {
				bad = err.Error()
			} else if now.Ino != st.Ino {
				bad = fmt.Sprintf("inode %d, was %d", now.Ino, st.Ino)
			}
		}
	}()
	underLoad(t, c.addr, func() {
		for range 2 {
			c.release(t, "good")
			pid := c.upgrade(t)
			next("RELOADING=1\n")
			next(fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=serving: upgraded", pid))
			if body, err := get(unixClient, "http://unix/"); err != nil || !strings.HasSuffix(body, fmt.Sprintf(" of %d", pid)) {
				t.Errorf("over the socket file after the upgrade to %d: %q, %v", pid, body, err)
			}
		}
	})
	close(stopWatch)
	if bad := <-watchDone; bad != "" {
		t.Errorf("the socket file changed during the upgrades: %s", bad)
	}

	// One upgrade at a time: Run's signal and Upgrade itself are refused
	// while a release whose workers never listen is tried.
	c.release(t, "nolisten")
	pid := c.pid(t)
	syscall.Kill(pid, syscall.SIGUSR2)
	next("RELOADING=1\n")
	syscall.Kill(pid, syscall.SIGUSR2)
	c.shim.waitLine(t, "upgrade already in progress")
	syscall.Kill(pid, syscall.SIGUSR1)
	c.shim.waitLine(t, "direct upgrade: "+ErrUpgradeInProgress.Error())
	c.shim.waitLine(t, "upgrade failed")
	next("READY=1\nSTATUS=serving; the upgrade failed: ")
	if got := c.pid(t); got != pid {
		t.Fatalf("the PID file names %d after a failed upgrade of %d", got, pid)
	}

	c.stop(t)
	next("STOPPING=1\n")
	if _, err := os.Lstat(sockPath); !os.IsNotExist(err) {
		t.Errorf("the socket file outlived the cluster: %v", err)
	}
}
