package clusternet

// The harness every test of the package shares. The test binary is also the
// worker, and can also be a primary of its own:
//
//   - workers: fork starts one running a helper (named in helpers), reap
//     ends it; messages collects what it sends, ask sends it a request and
//     decodes the reply, echo and tryEcho check that an echoing worker
//     still answers;
//   - waiting: recv, waitDone, testContext, all bounded by testTimeout;
//   - the primary's state for one test: setPolicy, withSettings;
//   - descriptors: countFDs and fdList (harness_unix_test.go,
//     harness_windows_test.go), openFDs, fdsAtMost, fdDiff;
//   - other processes: selfCommand runs the test binary again,
//     startPrimary runs it as a primary in one of the roles of primaries,
//     processGone (harness_unix_test.go) says whether a process has ended.
//
// Each family of tests keeps what only it needs in a file of its own
// (listen_harness_test.go, process_harness_test.go,
// reliability_harness_test.go), with the family's prefix (ln, pm, rel).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary is also the worker: a test forks it with
// CLUSTERNET_TEST_HELPER naming what the worker does.
const envHelper = "CLUSTERNET_TEST_HELPER"

var helpers = map[string]func(){}

// A test can also start the test binary as a primary of its own (to kill it,
// or to start it as systemd would): CLUSTERNET_TEST_PRIMARY names what it
// does, from primaries.
const envPrimary = "CLUSTERNET_TEST_PRIMARY"

var primaries = map[string]func(){}

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(envPrimary); ok && IsPrimary() {
		fn, ok := primaries[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "clusternet test primary: no role %q\n", name)
			os.Exit(3)
		}
		os.Unsetenv(envPrimary)
		fn()
		os.Exit(0)
	}
	if IsWorker() {
		name := os.Getenv(envHelper)
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "clusternet test worker: no helper %q\n", name)
			os.Exit(3)
		}
		fn()
		os.Exit(0)
	}
	// A race-enabled worker sleeps a second at exit unless told not to, and
	// the tests wait for many exits.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

func init() {
	helpers["idle"] = func() { select {} }
	helpers["echo"] = func() {
		Self().OnMessage(func(m Message) {
			var v any
			if err := m.Decode(&v); err != nil {
				Self().Send("decode error: " + err.Error())
				return
			}
			Self().Send(v)
		})
		select {}
	}
}

// testTimeout bounds every wait in the tests.
const testTimeout = 20 * time.Second

// --- workers ----------------------------------------------------------------

// fork forks a worker running helper and makes sure it is gone when the test
// ends: disconnected, then killed if it lingers.
func fork(t testing.TB, helper string, env ...string) *Worker {
	t.Helper()
	w, err := Fork(append([]string{envHelper + "=" + helper}, env...)...)
	if err != nil {
		t.Fatalf("Fork: %v", err)
	}
	t.Cleanup(func() { reap(t, w) })
	return w
}

// reap ends w if it is still running and waits for its exit event.
func reap(t testing.TB, w *Worker) {
	select {
	case <-w.Done():
		return
	default:
	}
	w.Kill(os.Kill)
	select {
	case <-w.Done():
	case <-time.After(testTimeout):
		t.Errorf("worker %d (pid %d) did not exit", w.ID(), w.Process().Pid)
	}
}

// messages returns a channel that gets w's messages from now on. A message
// that finds the channel full is dropped: the handler never blocks the
// worker's event loop.
func messages(w *Worker) <-chan Message {
	ch := make(chan Message, 1024)
	w.OnMessage(func(m Message) {
		select {
		case ch <- m:
		default:
		}
	})
	return ch
}

// ask sends req to w and decodes the next message from in (w's messages) as
// the reply.
func ask[R any](t testing.TB, w *Worker, in <-chan Message, req any) R {
	t.Helper()
	var reply R
	if err := w.Send(req); err != nil {
		t.Fatalf("Send(%v) to worker %d: %v", req, w.ID(), err)
	}
	m := recv(t, in, fmt.Sprintf("worker %d's reply", w.ID()))
	if err := m.Decode(&reply); err != nil {
		t.Fatalf("worker %d's reply %q: %v", w.ID(), m.Raw(), err)
	}
	return reply
}

// echo sends v to an echoing worker ("echo", or any that sends back what it
// gets) and checks that v comes back on in.
func echo[T comparable](t testing.TB, w *Worker, in <-chan Message, v T) {
	t.Helper()
	if !tryEcho(t, w, in, v) {
		t.Errorf("worker %d died before it echoed %v", w.ID(), v)
	}
}

// tryEcho is echo that reports false, and fails nothing, if w dies first.
// It may be called from any goroutine.
func tryEcho[T comparable](t testing.TB, w *Worker, in <-chan Message, v T) bool {
	t.Helper()
	if err := w.Send(v); err != nil {
		if errors.Is(err, ErrChannelClosed) {
			return false
		}
		t.Errorf("Send to worker %d: %v", w.ID(), err)
		return true
	}
	select {
	case m := <-in:
		var got T
		if err := m.Decode(&got); err != nil || got != v {
			t.Errorf("worker %d echoed %q for %v", w.ID(), m.Raw(), v)
		}
		return true
	case <-w.Done():
		return false
	case <-time.After(testTimeout):
		t.Errorf("worker %d did not echo %v", w.ID(), v)
		return true
	}
}

// --- waiting ----------------------------------------------------------------

// recv waits for a value on ch.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func waitDone(t testing.TB, w *Worker) {
	t.Helper()
	recv(t, w.Done(), "worker "+strconv.Itoa(w.ID())+" to exit")
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// --- the primary's state for one test ---------------------------------------

// require skips t when this platform cannot do feature. The features are
// "unix" (Unix domain sockets), "udp", "signals" (signals other than kill),
// "rr" (round-robin handoff), "reuseport"; platform_*_test.go say which are
// missing where, and why.
func require(t testing.TB, feature string) {
	t.Helper()
	if why := platformLacks(feature); why != "" {
		t.Skip(why)
	}
}

// setPolicy sets the scheduling policy for one test. The policy is frozen
// after the first Fork in a real program; tests share one process, so they
// set it directly and put it back.
func setPolicy(t testing.TB, p Policy) {
	t.Helper()
	cluster.mu.Lock()
	old := cluster.policy
	cluster.policy = p
	cluster.mu.Unlock()
	t.Cleanup(func() {
		cluster.mu.Lock()
		cluster.policy = old
		cluster.mu.Unlock()
	})
}

// withSettings replaces the primary's settings for one test and puts the
// old ones back when it ends.
func withSettings(t testing.TB, s Settings) {
	t.Helper()
	old := CurrentSettings()
	if err := SetupPrimary(s); err != nil {
		t.Fatalf("SetupPrimary: %v", err)
	}
	t.Cleanup(func() {
		if err := SetupPrimary(old); err != nil {
			t.Errorf("restoring the settings: %v", err)
		}
	})
}

// freePort returns a loopback address nobody listens on right now.
func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// --- descriptors ------------------------------------------------------------

// openFDs is countFDs, skipping t where descriptors cannot be counted.
func openFDs(t testing.TB) int {
	t.Helper()
	n, err := countFDs()
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return n
}

// fdsAtMost waits (bounded) until this process has at most n descriptors
// open, n as openFDs counted it before: those of a worker that is gone are
// closed by goroutines that may end after its exit event, but a leaked one
// never is. It fails t, saying what, and reports false if they do not.
func fdsAtMost(t testing.TB, n int, what string) bool {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		got := openFDs(t)
		if got <= n {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %d descriptors open, want at most %d", what, got, n)
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fdDiff describes the descriptors in after that are not in before, both
// from fdList.
func fdDiff(before, after string) string {
	old := strings.Fields(before)
	var added []string
	for _, fd := range strings.Fields(after) {
		if !slices.Contains(old, fd) {
			added = append(added, fd)
		}
	}
	if len(added) > 20 {
		added = append(added[:20], fmt.Sprintf("and %d more", len(added)-20))
	}
	return "new: " + strings.Join(added, " ")
}

// --- other processes --------------------------------------------------------

// selfCommand runs the test binary again with env added to this process's
// environment, less the package's own variables; env says what it is to be
// (a worker's helper, a primary's role). It runs no test.
func selfCommand(ctx context.Context, t testing.TB, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLUSTERNET_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = time.Second
	return cmd
}

// primary is the test binary running as a primary of its own.
type primary struct {
	cmd   *exec.Cmd
	lines chan string   // what it prints on its standard output
	done  chan struct{} // closed once it has exited
	err   error         // what cmd.Wait returned, once done is closed
}

// startPrimary starts the test binary as a primary in role (one of
// primaries), with env added to its environment. Its standard error is the
// test's. When the test ends it is stopped as an operator would
// (stopSignal) and waited for.
func startPrimary(t testing.TB, role string, env ...string) *primary {
	t.Helper()
	return runPrimary(t, primaryCommand(t, role, env...))
}

// primaryCommand is the command startPrimary runs, for a test that sets
// more of it (a process group of its own) before runPrimary.
func primaryCommand(t testing.TB, role string, env ...string) *exec.Cmd {
	t.Helper()
	return selfCommand(context.Background(), t, append([]string{envPrimary + "=" + role}, env...)...)
}

// runPrimary starts cmd, from primaryCommand, as startPrimary does.
func runPrimary(t testing.TB, cmd *exec.Cmd) *primary {
	t.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &primary{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody is looking for this line
			}
		}
		io.Copy(io.Discard, out)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		cmd.Process.Signal(stopSignal)
		select {
		case <-p.done:
		case <-time.After(testTimeout):
			cmd.Process.Kill()
			<-p.done
			t.Errorf("primary %d did not stop on %v", cmd.Process.Pid, stopSignal)
		}
	})
	return p
}

// line returns the next line the primary prints.
func (p *primary) line(t testing.TB) string {
	t.Helper()
	return p.nextLine(t, time.After(testTimeout), "a line")
}

// waitLine waits for a line of the primary's that contains s, and returns it.
func (p *primary) waitLine(t testing.TB, s string) string {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		if line := p.nextLine(t, deadline, strconv.Quote(s)); strings.Contains(line, s) {
			return line
		}
	}
}

func (p *primary) nextLine(t testing.TB, deadline <-chan time.Time, what string) string {
	t.Helper()
	select {
	case line := <-p.lines:
		return line
	case <-p.done:
		select { // what it printed before it exited
		case line := <-p.lines:
			return line
		default:
		}
		t.Fatalf("primary exited (%v) before saying %s", p.err, what)
	case <-deadline:
		t.Fatalf("timed out waiting for the primary to say %s", what)
	}
	panic("unreachable")
}

// wait waits for the primary to exit and returns what cmd.Wait returned.
func (p *primary) wait(t testing.TB) error {
	t.Helper()
	recv(t, p.done, "primary "+strconv.Itoa(p.cmd.Process.Pid)+" to exit")
	return p.err
}

// loopbackConn listens on network's loopback address, connects to it, and
// returns the listener and both ends of the connection. The listener and
// the client's end are closed when the test ends; the server's end is the
// caller's (tests send it to a worker, which closes it).
func loopbackConn(t testing.TB, network string) (ln net.Listener, client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return ln, client, server
}
