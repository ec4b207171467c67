package clusternet

// Node's cluster tests (test/parallel/test-cluster-*.js and the cluster tests
// of test/sequential and test/known_issues), translated: one Go test per
// Node file, named after it; docs/node-tests.md maps every file. This file
// holds the little the ports share (nodeFork, nodeCheck, nodeExit) and the
// first port; the others are in node_*_test.go, by topic.

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// nodeEvent is a primary-wide event about one worker, with the worker's
// state when its handler ran.
type nodeEvent struct {
	kind  string // fork, online, listening, message, disconnect, exit
	state State
	addr  Address
	st    ExitStatus
	msg   Message
}

// nodeEv routes the primary-wide events to the test that forked the worker:
// those handlers cannot be removed, so they are added once and ignore other
// tests' workers.
var nodeEv struct {
	once sync.Once
	mu   sync.Mutex
	m    map[*Worker]*nodeRoute
}

type nodeRoute struct {
	events chan nodeEvent
	hook   func(*Worker)
}

func nodeRouteOf(w *Worker) *nodeRoute {
	nodeEv.mu.Lock()
	defer nodeEv.mu.Unlock()
	return nodeEv.m[w]
}

func nodePost(w *Worker, e nodeEvent) {
	if r := nodeRouteOf(w); r != nil {
		e.state = w.State()
		select {
		case r.events <- e:
		default:
		}
	}
}

func nodeInstall() {
	nodeEv.once.Do(func() {
		nodeEv.mu.Lock()
		nodeEv.m = make(map[*Worker]*nodeRoute)
		nodeEv.mu.Unlock()
		OnFork(func(w *Worker) {
			r := nodeRouteOf(w)
			if r == nil {
				return
			}
			// The fork event runs before any other event of the worker:
			// the hook's handlers miss nothing.
			if r.hook != nil {
				r.hook(w)
			}
			nodePost(w, nodeEvent{kind: "fork"})
		})
		OnOnline(func(w *Worker) { nodePost(w, nodeEvent{kind: "online"}) })
		OnListening(func(w *Worker, a Address) { nodePost(w, nodeEvent{kind: "listening", addr: a}) })
		OnMessage(func(w *Worker, m Message) { nodePost(w, nodeEvent{kind: "message", msg: m}) })
		OnDisconnect(func(w *Worker) { nodePost(w, nodeEvent{kind: "disconnect"}) })
		OnExit(func(w *Worker, st ExitStatus) { nodePost(w, nodeEvent{kind: "exit", st: st}) })
	})
}

// nodeFork forks a worker running helper (reaped when the test ends). hook,
// if not nil, runs in the worker's fork event, before any other of its
// events: the place for the worker's own handlers. The channel gets the
// primary-wide events about the worker (cluster.on(...) in Node), in order.
func nodeFork(t testing.TB, hook func(*Worker), helper string, env ...string) (*Worker, <-chan nodeEvent) {
	t.Helper()
	nodeInstall()
	r := &nodeRoute{events: make(chan nodeEvent, 64), hook: hook}
	w := func() *Worker {
		// Held across Fork so that the fork event finds the route.
		nodeEv.mu.Lock()
		defer nodeEv.mu.Unlock()
		w, err := Fork(append([]string{envHelper + "=" + helper}, env...)...)
		if err != nil {
			t.Fatalf("Fork: %v", err)
		}
		nodeEv.m[w] = r
		return w
	}()
	t.Cleanup(func() {
		reap(t, w)
		nodeEv.mu.Lock()
		delete(nodeEv.m, w)
		nodeEv.mu.Unlock()
	})
	return w, r.events
}

// nodeEvents waits for w's exit and returns the primary-wide events about it
// (every one was posted before Done closed).
func nodeEvents(t testing.TB, w *Worker, ev <-chan nodeEvent) []nodeEvent {
	t.Helper()
	waitDone(t, w)
	var all []nodeEvent
	for {
		select {
		case e := <-ev:
			all = append(all, e)
		default:
			return all
		}
	}
}

// nodeCount counts the events of kind.
func nodeCount(events []nodeEvent, kind string) int {
	n := 0
	for _, e := range events {
		if e.kind == kind {
			n++
		}
	}
	return n
}

// nodeExit waits for w to exit and returns its status.
func nodeExit(t testing.TB, w *Worker) ExitStatus {
	t.Helper()
	waitDone(t, w)
	return w.exitStatus()
}

// nodeWantExit checks that w exited with code and no signal (Node: code,
// signal null).
func nodeWantExit(t testing.TB, w *Worker, code int) {
	t.Helper()
	if st := nodeExit(t, w); st.Code != code || st.Signal != nil {
		t.Errorf("worker %d exited with %v, want code %d and no signal", w.ID(), st, code)
	}
}

// nodeCheck is a worker's assert: a false cond ends the worker with code 3,
// saying why on its standard error (the test's).
func nodeCheck(cond bool, format string, args ...any) {
	if !cond {
		fmt.Fprintf(os.Stderr, "worker %d: "+format+"\n", append([]any{Self().ID()}, args...)...)
		os.Exit(3)
	}
}

func init() {
	// forced-exit is the worker of test-cluster-worker-forced-exit: its
	// disconnect handler, registered first thing, exits with a sentinel
	// unless the channel was closed under it. Node's worker sets a 10 ms
	// timer and relies on the forced exit (code 0) pre-empting it; Go has no
	// event loop that keeps a disconnected worker alive for a timer, so the
	// handler asks ExitedAfterDisconnect instead, which is what the forced
	// exit means.
	helpers["forced-exit"] = func() {
		Self().OnDisconnect(func() {
			if Self().ExitedAfterDisconnect() {
				os.Exit(42)
			}
		})
		select {}
	}
}

// TestNodeWorkerForcedExit is test-cluster-worker-forced-exit: a worker the
// primary disconnects in its online handler exits with the code its own
// disconnect handler chose (the handler, registered at the start of main,
// must run however early the disconnect comes); one whose channel the
// primary closes (CloseChannel, Node's worker.process.disconnect()) exits
// with code 0, not after a disconnect. Several times each: the early
// disconnect was a race.
func TestNodeWorkerForcedExit(t *testing.T) {
	for range 8 {
		unforced := fork(t, "forced-exit")
		unforced.OnOnline(func() { unforced.Disconnect() })
		forced := fork(t, "forced-exit")
		forced.OnOnline(func() { forced.CloseChannel() })
		waitDone(t, unforced)
		waitDone(t, forced)
		if st := unforced.exitStatus(); st.Code != 42 {
			t.Errorf("disconnected in its online handler, worker %d exited with %v, want the sentinel 42", unforced.ID(), st)
		}
		if st := forced.exitStatus(); st.Code != 0 || forced.ExitedAfterDisconnect() {
			t.Errorf("channel closed in its online handler, worker %d exited with %v (after disconnect: %v), want code 0, false", forced.ID(), st, forced.ExitedAfterDisconnect())
		}
	}
}
