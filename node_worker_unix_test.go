//go:build unix

package clusternet

// Node's tests of how a worker ends that send signals or look for the
// process after its exit: test-cluster-worker-exit, -worker-kill,
// -worker-kill-signal, -worker-disconnect, -kill-infinite-loop.

import (
	"sync"
	"syscall"
	"testing"
)

func init() {
	helpers["node-spin"] = func() {
		for {
		}
	}
}

// nodeEnding is what the events about one ending worker showed.
type nodeEnding struct {
	mu              sync.Mutex
	own             map[string]int // the worker's own disconnect and exit events
	afterDisconnect bool           // ExitedAfterDisconnect in the disconnect handler
	state           State          // State() in the disconnect handler
	exit            ExitStatus     // the worker's exit event
	died            bool           // the process was gone in the exit handler
	workersAtExit   int            // len(Workers()) in the exit handler
}

// watch adds the worker's own disconnect and exit handlers; it is a
// nodeFork hook, then.
func (e *nodeEnding) watch(then func(*Worker)) func(*Worker) {
	e.own = map[string]int{}
	return func(w *Worker) {
		w.OnDisconnect(func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.own["disconnect"]++
			e.afterDisconnect, e.state = w.ExitedAfterDisconnect(), w.State()
		})
		w.OnExit(func(st ExitStatus) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.own["exit"]++
			e.exit, e.died, e.workersAtExit = st, processGone(w.Process().Pid), len(Workers())
		})
		if then != nil {
			then(w)
		}
	}
}

// check compares with Node's expected_results: one disconnect and one exit
// event primary-wide and on the worker, the status in both exit events,
// ExitedAfterDisconnect and the state at the disconnect, the process gone.
func (e *nodeEnding) check(t *testing.T, w *Worker, events []nodeEvent, want ExitStatus, afterDisconnect bool) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if n := nodeCount(events, "disconnect"); n != 1 {
		t.Errorf("primary-wide disconnect events: %d, want 1", n)
	}
	if n := nodeCount(events, "exit"); n != 1 {
		t.Errorf("primary-wide exit events: %d, want 1", n)
	}
	for _, ev := range events {
		if ev.kind == "exit" && ev.st != want {
			t.Errorf("primary-wide exit event: %v, want %v", ev.st, want)
		}
	}
	if e.own["disconnect"] != 1 || e.own["exit"] != 1 {
		t.Errorf("the worker's own events: %v, want one disconnect and one exit", e.own)
	}
	if e.exit != want {
		t.Errorf("the worker's exit event: %v, want %v", e.exit, want)
	}
	if e.state != StateDisconnected {
		t.Errorf("state in the disconnect handler: %v, want disconnected", e.state)
	}
	if e.afterDisconnect != afterDisconnect {
		t.Errorf("ExitedAfterDisconnect in the disconnect handler: %v, want %v", e.afterDisconnect, afterDisconnect)
	}
	if !e.died {
		t.Errorf("worker %d's process was still running in its exit handler", w.ID())
	}
}

// TestNodeWorkerExit is test-cluster-worker-exit: a worker that exits with
// 42 once it listens gives one disconnect and one exit event, primary-wide
// and its own, code 42 and no signal, state disconnected and
// ExitedAfterDisconnect false at the disconnect, its process gone.
func TestNodeWorkerExit(t *testing.T) {
	var e nodeEnding
	w, ev := nodeFork(t, e.watch(nil), "node-http", "NODE_EXIT_AFTER_LISTEN=1")
	e.check(t, w, nodeEvents(t, w, ev), ExitStatus{Code: 42}, false)
}

// TestNodeWorkerKill is test-cluster-worker-kill: a listening worker whose
// process gets SIGKILL (worker.process.kill) ends as above, with code -1
// (Node: null) and signal SIGKILL.
func TestNodeWorkerKill(t *testing.T) {
	var e nodeEnding
	var once sync.Once
	w, ev := nodeFork(t, e.watch(func(w *Worker) {
		w.OnListening(func(Address) { once.Do(func() { w.Process().Signal(syscall.SIGKILL) }) })
	}), "node-http")
	e.check(t, w, nodeEvents(t, w, ev), ExitStatus{Code: -1, Signal: syscall.SIGKILL}, false)
}

// TestNodeWorkerKillSignal is test-cluster-worker-kill-signal:
// w.Kill(SIGKILL) on a listening worker: one disconnect event with
// ExitedAfterDisconnect false and state disconnected, one exit event with
// code -1 (Node: null) and SIGKILL, the process gone and no worker left in
// Workers() in the exit handler, one primary-wide exit event.
func TestNodeWorkerKillSignal(t *testing.T) {
	var e nodeEnding
	var once sync.Once
	w, ev := nodeFork(t, e.watch(func(w *Worker) {
		w.OnListening(func(Address) { once.Do(func() { w.Kill(syscall.SIGKILL) }) })
	}), "node-http")
	e.check(t, w, nodeEvents(t, w, ev), ExitStatus{Code: -1, Signal: syscall.SIGKILL}, false)
	if e.workersAtExit != 0 {
		t.Errorf("Workers() has %d workers in the exit handler, want 0", e.workersAtExit)
	}
}

// TestNodeWorkerDisconnect is test-cluster-worker-disconnect: Disconnect on
// a listening worker succeeds (Node: returns the worker); one disconnect and
// one exit event primary-wide and its own; state disconnected and
// ExitedAfterDisconnect true at the disconnect; the worker's own disconnect
// handler ran (it exits with 42); the process is gone.
func TestNodeWorkerDisconnect(t *testing.T) {
	var e nodeEnding
	var once sync.Once
	discErr := make(chan error, 1)
	w, ev := nodeFork(t, e.watch(func(w *Worker) {
		w.OnListening(func(Address) { once.Do(func() { discErr <- w.Disconnect() }) })
	}), "node-http", "NODE_DISCONNECT_EXIT=1")
	if err := recv(t, discErr, "the listening event"); err != nil {
		t.Errorf("Disconnect: %v", err)
	}
	e.check(t, w, nodeEvents(t, w, ev), ExitStatus{Code: 42}, true)
}

// TestNodeKillInfiniteLoop is test-cluster-kill-infinite-loop: a worker
// spinning forever that gets SIGTERM (worker.process.kill()) exits with
// code -1 (Node: null) and SIGTERM.
//
// Go differs: a Go worker drains on SIGTERM where Node's dies
// (documented); Settings.DieOnSignal gives Node's behaviour, so it is set.
func TestNodeKillInfiniteLoop(t *testing.T) {
	withSettings(t, Settings{DieOnSignal: true})
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() { w.Process().Signal(syscall.SIGTERM) })
	}, "node-spin")
	if st := nodeExit(t, w); st.Code != -1 || st.Signal != syscall.SIGTERM {
		t.Errorf("exit %v, want code -1 and SIGTERM", st)
	}
}
