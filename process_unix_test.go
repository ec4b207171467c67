//go:build unix

package clusternet

// Process-model tests that need Unix: signals, descriptors past stdio,
// counting descriptors, and a primary killed under its worker.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pmEnvSubPrimary makes the test binary act as a primary (see init below).
const pmEnvSubPrimary = "PM_TEST_SUB_PRIMARY"

func init() {
	// The primary-death test runs the test binary as a primary of its own,
	// which forks a worker, prints the worker's pid once it is online, and
	// waits to be killed. It runs here, in init, because TestMain (which
	// runs first otherwise) only dispatches workers; init functions run in
	// file order, so the package's own state is ready by now.
	if IsPrimary() && os.Getenv(pmEnvSubPrimary) == "1" {
		pmSubPrimary()
	}

	// pm-stdio reads its stdin, writes it upper-cased to stdout, a line to
	// stderr and a line to descriptor 3 (Settings.ExtraFiles[0]).
	helpers["pm-stdio"] = func() {
		in, err := io.ReadAll(os.Stdin)
		if err != nil {
			os.Exit(9)
		}
		os.Stdout.WriteString(strings.ToUpper(string(in)))
		fmt.Fprintf(os.Stderr, "stderr: read %d bytes\n", len(in))
		extra := os.NewFile(3, "extra")
		if _, err := extra.WriteString("through descriptor 3\n"); err != nil {
			os.Exit(10)
		}
		extra.Close()
	}

	// pm-unclaimed counts its descriptors, ignores the handles the primary
	// sends it, and sends handles the primary ignores.
	helpers["pm-unclaimed"] = func() {
		self := Self()
		r, w, err := os.Pipe()
		if err != nil {
			os.Exit(8)
		}
		defer w.Close()
		self.OnMessage(func(m Message) {
			var req pmUnclaimed
			m.Decode(&req)
			switch req.Op {
			case "count":
				n, err := pmCountFDs()
				if err != nil {
					self.Send(pmUnclaimed{Op: "error: " + err.Error()})
					return
				}
				self.Send(pmUnclaimed{Op: "count", N: n})
			case "send":
				for range req.N {
					self.Send(pmUnclaimed{Op: "handle"}, WithHandle(r))
				}
				self.Send(pmUnclaimed{Op: "sent"})
			}
		})
		select {}
	}
}

type pmUnclaimed struct {
	Op string
	N  int
}

func pmSubPrimary() {
	online := make(chan struct{})
	var once sync.Once
	OnOnline(func(*Worker) { once.Do(func() { close(online) }) })
	w, err := Fork(envHelper+"=idle", pmEnvSubPrimary+"=")
	if err != nil {
		fmt.Fprintln(os.Stderr, "sub-primary: Fork:", err)
		os.Exit(2)
	}
	select {
	case <-online:
	case <-time.After(testTimeout):
		fmt.Fprintln(os.Stderr, "sub-primary: the worker did not come online")
		w.Kill(os.Kill)
		os.Exit(2)
	}
	fmt.Println(w.Process().Pid)
	// The test kills this process; if it does not, end anyway.
	time.Sleep(2 * testTimeout)
	w.Kill(os.Kill)
	os.Exit(1)
}

// pmCountFDs counts this process's open descriptors.
func pmCountFDs() (int, error) {
	dir := "/dev/fd"
	if runtime.GOOS == "linux" {
		dir = "/proc/self/fd"
	}
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
}

func pmFDs(t testing.TB) int {
	t.Helper()
	n, err := pmCountFDs()
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return n
}

// pmGone reports whether process pid has ended (a zombie has).
func pmGone(pid int) bool {
	if runtime.GOOS == "linux" {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		// pid (comm) state ...: comm may hold anything, so look after the last ')'.
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		f := strings.Fields(rest)
		return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// Kill(os.Kill) kills with SIGKILL: the exit event has the signal and code
// -1, and ExitedAfterDisconnect stays false.
func TestProcessKillSIGKILL(t *testing.T) {
	require(t, "signals")
	w := pmFork(t, "idle")
	pmEvents(t, w, "the online event", pmHas("online"))
	status := pmOnExit(w)
	if err := w.Kill(os.Kill); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if slices := Workers(); pmContains(slices, w) {
		t.Errorf("worker %d still in Workers() after Kill", w.ID())
	}
	st := recv(t, status, "the exit event")
	if st.Signal != syscall.SIGKILL || st.Code != -1 {
		t.Errorf("exit status %+v, want SIGKILL and code -1", st)
	}
	if w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = true after a kill from the primary")
	}
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if err := w.Kill(os.Kill); err != nil {
		t.Errorf("Kill of a dead worker: %v, want nil", err)
	}
}

// Kill(nil) sends SIGTERM, and the exit event says so.
func TestProcessKillDefaultSignal(t *testing.T) {
	require(t, "signals")
	w := pmFork(t, "idle")
	pmEvents(t, w, "the online event", pmHas("online"))
	status := pmOnExit(w)
	if err := w.Kill(nil); err != nil {
		t.Fatalf("Kill(nil): %v", err)
	}
	st := recv(t, status, "the exit event")
	if st.Signal != syscall.SIGTERM || st.Code != -1 {
		t.Errorf("exit status %+v, want SIGTERM and code -1", st)
	}
	if st.String() != "signal: "+syscall.SIGTERM.String() {
		t.Errorf("ExitStatus.String() = %q", st.String())
	}
	if w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = true after a kill from the primary")
	}
}

func pmContains(ws []*Worker, w *Worker) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}

// pmSyncBuffer is an io.Writer that is not an *os.File, safe to read while
// the package writes to it.
type pmSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *pmSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *pmSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitString waits until b holds want; the package copies a worker's
// output on its own goroutines, which may finish after the exit event.
func (b *pmSyncBuffer) waitString(t testing.TB, want, what string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for b.String() != want {
		if time.Now().After(deadline) {
			t.Errorf("%s = %q, want %q", what, b.String(), want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Custom stdio: Stdin, Stdout and Stderr that are not files, and an extra
// descriptor from Settings.ExtraFiles.
func TestProcessCustomStdio(t *testing.T) {
	var stdout, stderr pmSyncBuffer
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pmSetup(t, Settings{
		Stdin:      strings.NewReader("text for the worker's stdin"),
		Stdout:     &stdout,
		Stderr:     &stderr,
		ExtraFiles: []*os.File{pw},
	})
	w := fork(t, "pm-stdio")
	pw.Close() // the worker has its own copy
	if w.Stdout() != nil || w.Stderr() != nil {
		t.Errorf("Stdout() and Stderr() must be nil when Settings.Stdout and Stderr are set")
	}
	status := pmOnExit(w)
	pr.SetReadDeadline(time.Now().Add(testTimeout))
	extra, err := io.ReadAll(pr)
	if string(extra) != "through descriptor 3\n" || err != nil {
		t.Errorf("descriptor 3: %q, %v", extra, err)
	}
	if st := recv(t, status, "the exit event"); st != (ExitStatus{}) {
		t.Errorf("worker exit: %v", st)
	}
	stdout.waitString(t, "TEXT FOR THE WORKER'S STDIN", "worker stdout")
	stderr.waitString(t, "stderr: read 27 bytes\n", "worker stderr")
}

// Handles nobody takes are closed once the handlers return, on both
// sides: no descriptor leaks.
func TestProcessUnclaimedHandlesClosed(t *testing.T) {
	const n = 50
	w := fork(t, "pm-unclaimed")
	in := pmInbox(w) // takes nothing
	ask := func(req pmUnclaimed) pmUnclaimed {
		t.Helper()
		var rep pmUnclaimed
		pmAsk(t, w, in, req, &rep)
		if strings.HasPrefix(rep.Op, "error") {
			t.Skipf("worker: %s", rep.Op)
		}
		return rep
	}

	// Primary to worker.
	before := ask(pmUnclaimed{Op: "count"}).N
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range n {
		if err := w.Send(pmUnclaimed{Op: "handle"}, WithHandle(f)); err != nil {
			t.Fatal(err)
		}
	}
	if after := ask(pmUnclaimed{Op: "count"}).N; after > before {
		t.Errorf("worker: %d descriptors before %d unclaimed handles, %d after", before, n, after)
	}

	// Worker to primary.
	mine := pmFDs(t)
	if err := w.Send(pmUnclaimed{Op: "send", N: n}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		m := recv(t, in, "the worker's handles")
		var rep pmUnclaimed
		m.Decode(&rep)
		if rep.Op == "sent" {
			if i != n {
				t.Errorf("got %d messages with handles, want %d", i, n)
			}
			break
		}
	}
	relFDsAtMost(t, mine, fmt.Sprintf("primary after %d unclaimed handles", n))
}

// When the primary dies (SIGKILL, no chance to clean up), its workers are
// gone within a second.
func TestProcessPrimaryDeath(t *testing.T) {
	require(t, "signals")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := pmCommand(testContext(t), exe, []string{pmEnvSubPrimary + "=1"})
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		s.Scan()
		lines <- s.Text()
	}()
	line := recv(t, lines, "the sub-primary to report its worker's pid")
	pid, err := strconv.Atoi(line)
	if err != nil || pid <= 0 {
		t.Fatalf("sub-primary printed %q, want its worker's pid", line)
	}
	if pmGone(pid) {
		t.Fatalf("worker %d is not running before the primary dies", pid)
	}
	t.Cleanup(func() {
		if !pmGone(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for !pmGone(pid) {
		if time.Since(killed) > time.Second {
			t.Fatalf("worker %d still running %v after its primary was killed", pid, time.Since(killed))
		}
		time.Sleep(5 * time.Millisecond)
	}
	waited = true
	if err := cmd.Wait(); err == nil {
		t.Errorf("the sub-primary exited normally; it should have been killed")
	}
}
