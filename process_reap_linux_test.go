package clusternet

// Reaping orphans (primary_reap_linux.go): a primary that is PID 1 of a PID
// namespace, or a subreaper, reaps the orphans of its workers' children, and
// neither its workers nor the children it starts with os/exec.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	// reap-primary runs Run(ctx, 1), as PID 1 of a PID namespace or with
	// WithSubreaper (REAP_SUBREAPER=1), with a Debug log on standard output.
	// Its worker (reap-orphans) leaves REAP_ORPHANS orphans, and while they
	// die the primary starts os/exec children of its own, each waited for
	// only once it is a zombie. It says "zombies 0 strays 0" once they are
	// gone, kills its first worker with SIGKILL, does it all again with the
	// second, says "ready", and reports what Run returned when it is
	// stopped.
	primaries["reap-primary"] = reapPrimary
	// reap-noproc is PID 1 of a PID namespace whose /proc is still its
	// parent's: Run warns that it cannot reap, and runs for a second.
	primaries["reap-noproc"] = func() {
		s := CurrentSettings()
		s.Env = []string{envHelper + "=idle"}
		if err := SetupPrimary(s); err != nil {
			fmt.Println("setup:", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
		fmt.Println("run returned:", Run(ctx, 1, WithLogger(log)))
	}
	helpers["reap-orphans"] = func() {
		n := os.Getenv("REAP_ORPHANS")
		// Double forks: each subshell exits at once, leaving its sleep an
		// orphan that dies 50 ms on.
		cmd := exec.Command("/bin/sh", "-c", `i=0; while [ $i -lt "$1" ]; do (sleep 0.05 &); i=$((i+1)); done`, "sh", n)
		if err := cmd.Run(); err != nil {
			Self().Send("orphans: " + err.Error())
		} else {
			Self().Send("orphans " + n)
		}
		select {}
	}
}

// reapExecs is how many os/exec children reap-primary waits for.
const reapExecs = 20

func reapPrimary() {
	pid1 := os.Getpid() == 1
	if pid1 {
		// A mount namespace of its own too: /proc for its PID namespace,
		// as a container runtime mounts it, seen by nobody else.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Println("mount:", err)
			return
		}
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			fmt.Println("mount:", err)
			return
		}
	}
	reported := make(chan *Worker, 4)
	OnMessage(func(w *Worker, m Message) {
		var s string
		m.Decode(&s)
		fmt.Println(s)
		reported <- w
	})
	OnExit(func(w *Worker, st ExitStatus) { fmt.Printf("exit %d %v\n", w.ID(), st) })
	s := CurrentSettings()
	s.Env = []string{envHelper + "=reap-orphans", "REAP_ORPHANS=" + os.Getenv("REAP_ORPHANS")}
	if err := SetupPrimary(s); err != nil {
		fmt.Println("setup:", err)
		return
	}
	opts := []RunOption{
		WithShutdownTimeout(testTimeout),
		WithLogger(slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}
	if os.Getenv("REAP_SUBREAPER") == "1" {
		opts = append(opts, WithSubreaper())
	}
	go func() {
		for round := 1; round <= 2; round++ {
			var w *Worker
			select {
			case w = <-reported:
			case <-time.After(testTimeout):
				fmt.Println("no report from a worker")
				return
			}
			var execs chan string
			if round == 1 {
				execs = make(chan string, 1)
				go func() { execs <- reapExecChildren(reapExecs) }()
			}
			fmt.Println(reapWaitZombies(pid1))
			if execs != nil {
				fmt.Println(<-execs)
			}
			if round == 1 {
				// As an operator, or the OOM killer, would.
				syscall.Kill(w.Process().Pid, syscall.SIGKILL)
			}
		}
		fmt.Println("ready")
	}()
	fmt.Println("run returned:", Run(context.Background(), 1, opts...))
	if sub, err := isSubreaper(); err == nil {
		fmt.Println("subreaper after run:", sub)
	}
}

// reapExecChildren starts n os/exec children that exit with code 7, one at a
// time, lets each be a zombie for 20 ms (a SIGCHLD sweep runs meanwhile),
// and checks that its Wait still gets the code.
func reapExecChildren(n int) string {
	for i := range n {
		cmd := exec.Command("/bin/sh", "-c", "exit 7")
		if err := cmd.Start(); err != nil {
			return "exec: " + err.Error()
		}
		deadline := time.Now().Add(testTimeout)
		for !processGone(cmd.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			return fmt.Sprintf("exec: child %d: Wait returned %v; want exit status 7", i, err)
		}
	}
	return fmt.Sprintf("exec ok %d", n)
}

// reapWaitZombies waits, bounded, until no zombie is left (in the whole PID
// namespace as its PID 1; among this process's children otherwise) and no
// orphan still sleeps, and says how that went.
func reapWaitZombies(pid1 bool) string {
	start := time.Now()
	most := 0
	for {
		zombies, strays := reapCount(pid1)
		most = max(most, zombies)
		if zombies == 0 && strays == 0 {
			return fmt.Sprintf("zombies 0 strays 0 after %v, at most %d", time.Since(start).Round(time.Millisecond), most)
		}
		if time.Since(start) > testTimeout {
			return fmt.Sprintf("zombies %d strays %d after %v (timed out)", zombies, strays, testTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reapCount counts the zombies and the sleeping orphans (sleep processes
// whose parent is this one) in /proc.
func reapCount(pid1 bool) (zombies, strays int) {
	self := strconv.Itoa(os.Getpid())
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		name := e.Name()
		if _, err := strconv.Atoi(name); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		comm := string(b[bytes.IndexByte(b, '(')+1 : i])
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		switch {
		case f[0] == "Z" && (pid1 || f[1] == self):
			zombies++
		case f[0] != "Z" && f[1] == self && comm == "sleep":
			strays++
		}
	}
	return zombies, strays
}

// reapRun runs reap-primary (in cmd's namespaces), stops it with SIGTERM
// once it is ready, and checks everything it said.
func reapRun(t *testing.T, cmd *exec.Cmd, subreaper bool) {
	const orphans = 100
	p := runPrimary(t, cmd)
	var reaped, zeros int
	var lines []string
	check := func(line string) {
		lines = append(lines, line)
		switch {
		case strings.Contains(line, `msg="reaped an orphan"`):
			reaped++
		case strings.Contains(line, "level="):
		case strings.HasPrefix(line, "zombies 0 strays 0"):
			zeros++
			t.Log(line)
		case strings.HasPrefix(line, "zombies"), strings.HasPrefix(line, "exec:"),
			strings.HasPrefix(line, "orphans:"), strings.HasPrefix(line, "mount:"),
			strings.HasPrefix(line, "no report"), strings.HasPrefix(line, "setup:"):
			t.Error(line)
		}
	}
	for {
		line := p.line(t)
		check(line)
		if line == "ready" {
			break
		}
	}
	// The container runtime's stop: SIGTERM to the namespace's PID 1.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		line := p.line(t)
		check(line)
		if strings.HasPrefix(line, "run returned:") {
			if line != "run returned: <nil>" {
				t.Errorf("%s; want nil", line)
			}
			break
		}
	}
	if subreaper {
		if line := p.line(t); line != "subreaper after run: false" {
			t.Errorf("%q; want the subreaper attribute put back", line)
		}
	}
	if err := p.wait(t); err != nil {
		t.Errorf("the primary exited with %v", err)
	}
	t.Logf("%d orphans reaped", reaped)
	all := strings.Join(lines, "\n")
	if zeros != 2 {
		t.Errorf("%d rounds ended with no zombie and no orphan left; want 2", zeros)
	}
	if reaped < 2*orphans {
		t.Errorf("%d orphans reaped; want at least %d", reaped, 2*orphans)
	}
	if !strings.Contains(all, fmt.Sprintf("exec ok %d", reapExecs)) {
		t.Errorf("the os/exec children's statuses were not all right")
	}
	if !strings.Contains(all, "\nexit 1 signal: killed\n") {
		t.Errorf("no \"exit 1 signal: killed\" for the worker killed with SIGKILL")
	}
	if !strings.Contains(all, "\nexit 2 exit code 0\n") {
		t.Errorf("no \"exit 2 exit code 0\" for the worker stopped by the shutdown")
	}
	if t.Failed() {
		t.Logf("the primary said:\n%s", all)
	}
}

// TestReapPID1: the primary as PID 1 of a PID namespace, as a container's
// entrypoint, reaps every orphan (no zombie left after 2×100), its workers'
// exits still say how they ended, its os/exec children's Waits still get
// their codes, and SIGTERM to PID 1 shuts it down gracefully.
func TestReapPID1(t *testing.T) {
	cmd := primaryCommand(t, "reap-primary", "REAP_ORPHANS=100")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: reapNamespaces(t)}
	reapRun(t, cmd, false)
}

// TestReapPID1ForeignProc: as PID 1 of a PID namespace whose /proc is not
// its own, where a pid in /proc is not the pid, the primary does not reap,
// says why, and runs as usual.
func TestReapPID1ForeignProc(t *testing.T) {
	cmd := primaryCommand(t, "reap-noproc")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: reapNamespaces(t)}
	p := runPrimary(t, cmd)
	warned := false
	for {
		line := p.line(t)
		warned = warned || strings.Contains(line, `msg="not reaping orphans"`) && strings.Contains(line, "/proc is not this PID namespace's")
		if strings.HasPrefix(line, "run returned:") {
			if line != "run returned: <nil>" {
				t.Errorf("%s; want nil", line)
			}
			break
		}
	}
	if !warned {
		t.Error("no warning that it does not reap")
	}
	if err := p.wait(t); err != nil {
		t.Errorf("the primary exited with %v", err)
	}
}

// reapNamespaces returns the clone flags of a new PID namespace (and a
// mount namespace, for its /proc), or skips t where they cannot be made.
func reapNamespaces(t *testing.T) uintptr {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to create a PID namespace (CI runs as root)")
	}
	const flags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS
	probe := exec.Command("/bin/true")
	probe.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	if err := probe.Run(); err != nil {
		t.Skipf("cannot create a PID namespace here: %v", err)
	}
	return flags
}

// TestReapSubreaper: the same with WithSubreaper, in this PID namespace
// (no root needed); the attribute is put back when Run returns.
func TestReapSubreaper(t *testing.T) {
	reapRun(t, primaryCommand(t, "reap-primary", "REAP_ORPHANS=100", "REAP_SUBREAPER=1"), true)
}

// TestReapOnlyUnowned: a sweep reaps the zombie children that no pidfd here
// refers to (started by syscall.ForkExec: they look like orphans), and
// reads how they ended; it leaves
// an os/exec child's to its Wait, and leaves a worker's while pinChild pins
// it.
func TestReapOnlyUnowned(t *testing.T) {
	if err := pidfdsWork(); err != nil {
		t.Skipf("no pidfds: %v", err)
	}
	cmd := exec.Command("/bin/sh", "-c", "exit 7")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bare, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	killed, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "kill -KILL $$"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sys := &syscall.SysProcAttr{}
	release := pinChild(sys)
	pinned, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 5"}, &syscall.ProcAttr{Sys: sys})
	if err != nil {
		release()
		t.Fatal(err)
	}
	defer func() {
		release()
		var ws syscall.WaitStatus
		syscall.Wait4(pinned, &ws, 0, nil)
		syscall.Wait4(bare, &ws, 0, nil)
		syscall.Wait4(killed, &ws, 0, nil)
	}()
	for _, pid := range []int{cmd.Process.Pid, bare, killed, pinned} {
		deadline := time.Now().Add(testTimeout)
		for !processGone(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("child %d did not exit", pid)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var logged bytes.Buffer
	r, err := newReaper(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for r.sweep() {
	}
	if !strings.Contains(logged.String(), fmt.Sprintf("pid=%d status=\"exit code 3\"", bare)) {
		t.Errorf("log %q; want the bare child %d reaped with exit code 3", logged.String(), bare)
	}
	if !strings.Contains(logged.String(), fmt.Sprintf("pid=%d status=\"signal: killed\"", killed)) {
		t.Errorf("log %q; want the bare child %d reaped, killed by SIGKILL", logged.String(), killed)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pinned, &ws, syscall.WNOHANG, nil); err != nil || ws.ExitStatus() != 5 {
		t.Errorf("the pinned child: wait4: %v, %v; want exit status 5", err, ws)
	}
	if err := cmd.Wait(); err == nil || err.Error() != "exit status 7" {
		t.Errorf("the os/exec child's Wait: %v; want exit status 7", err)
	}
}

// TestReapWorkerDiesAtOnce: a worker that exits as soon as it is exec'd, so
// before os.FindProcess has opened its pidfd, still reports its exit code
// while orphans are reaped: startProcess pins it from its clone on
// (pinChild).
func TestReapWorkerDiesAtOnce(t *testing.T) {
	if err := pidfdsWork(); err != nil {
		t.Skipf("no pidfds: %v", err)
	}
	s := CurrentSettings()
	s.Exec = "/bin/true"
	withSettings(t, s)
	stop := startReaper(slog.New(slog.DiscardHandler), true)
	defer stop()
	const n = 200
	bad := 0
	for range n {
		w, err := Fork()
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, w)
		if st := w.exitStatus(); st.Code != 0 || st.Signal != nil {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d workers that exited at once lost their status to the reaper (want 0: startProcess pins them with pinChild)", bad, n)
	}
}

// BenchmarkReapSweep measures one sweep: with no zombie (what most SIGCHLDs
// and every idle tick cost), with one zombie its owner has not waited for
// yet (the children listed, the descriptors scanned), the same with 1000
// more descriptors open, and per orphan for 100 at once.
func BenchmarkReapSweep(b *testing.B) {
	if err := pidfdsWork(); err != nil {
		b.Skipf("no pidfds: %v", err)
	}
	var live []*exec.Cmd
	for range 10 {
		cmd := exec.Command("/bin/sleep", "60")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		live = append(live, cmd)
	}
	defer func() {
		for _, cmd := range live {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	r, err := newReaper(slog.New(slog.DiscardHandler), os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	b.Logf("%d children, %d threads", len(live), len(tasks))
	b.Run("none", func(b *testing.B) {
		for b.Loop() {
			r.sweep()
		}
	})
	owned := exec.Command("/bin/true")
	if err := owned.Start(); err != nil {
		b.Fatal(err)
	}
	for !processGone(owned.Process.Pid) {
		time.Sleep(time.Millisecond)
	}
	b.Run("owned", func(b *testing.B) {
		for b.Loop() {
			r.sweep()
		}
	})
	var extra []*os.File
	for range 1000 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			b.Fatal(err)
		}
		extra = append(extra, f)
	}
	b.Run("owned+1000fds", func(b *testing.B) {
		for b.Loop() {
			r.sweep()
		}
	})
	for _, f := range extra {
		f.Close()
	}
	b.Run("orphan", func(b *testing.B) {
		// syscall.ForkExec's children hold no pidfd: orphans, to the reaper.
		const batch = 100
		for i := 0; i < b.N; i += batch {
			b.StopTimer()
			pids := make([]int, batch)
			for j := range pids {
				pid, err := syscall.ForkExec("/bin/true", []string{"true"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				pids[j] = pid
			}
			for _, pid := range pids {
				for !processGone(pid) {
					time.Sleep(time.Millisecond)
				}
			}
			before := r.reaped
			b.StartTimer()
			for r.sweep() {
			}
			b.StopTimer()
			if got := r.reaped - before; got != batch {
				b.Fatalf("reaped %d of %d", got, batch)
			}
			b.StartTimer()
		}
	})
	owned.Wait()
}
