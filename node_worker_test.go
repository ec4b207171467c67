package clusternet

// Node's tests of a worker's events, state and life: test-cluster-basic,
// -worker-death, -worker-disconnect, -worker-isdead, -worker-isconnected,
// -worker-init, -worker-events, -kill-disconnect, -call-and-destroy,
// -worker-destroy. Those that need signals or to see a process gone are in
// node_worker_unix_test.go.

import (
	"net/http"
	"os"
	"sync"
	"testing"
)

func init() {
	// http.Server(...).listen(0, '127.0.0.1'): listen, serve, never answer.
	helpers["node-http"] = func() {
		// test-cluster-basic: NODE_UNIQUE_ID is removed on startup.
		_, present := os.LookupEnv(envWorkerID)
		nodeCheck(!present, "%s is still in the environment", envWorkerID)
		ln, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		if os.Getenv("NODE_EXIT_AFTER_LISTEN") != "" {
			os.Exit(42) // test-cluster-worker-exit
		}
		go http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			os.Exit(5) // common.mustNotCall
		}))
		if os.Getenv("NODE_DISCONNECT_EXIT") != "" {
			// test-cluster-worker-disconnect (registered after listen, as there).
			Self().OnDisconnect(func() { os.Exit(42) })
		}
		select {}
	}
	helpers["node-exit42"] = func() { os.Exit(42) }
	helpers["node-isdead"] = func() {
		nodeCheck(!Self().IsDead(), "IsDead() is true in the worker")
		Self().Send("readyToDie")
		select {}
	}
	helpers["node-isconnected"] = func() {
		nodeCheck(Self().IsConnected(), "IsConnected() is false at start")
		// cluster.worker.on('disconnect') and process.on('disconnect'): both
		// are Self().OnDisconnect in Go. Each must see the channel closed;
		// the second exits with 42 once both have.
		var first bool
		Self().OnDisconnect(func() { first = !Self().IsConnected() })
		Self().OnDisconnect(func() {
			nodeCheck(first && !Self().IsConnected(), "connected in a disconnect handler")
			os.Exit(42)
		})
		Self().Send("readyToDisconnect")
		select {}
	}
	helpers["node-init"] = func() {
		Self().OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			Self().Send(s == "foo")
		})
		select {}
	}
	helpers["node-events"] = func() {
		// process.on('message') and cluster.worker.on('message'): both are
		// Self().OnMessage in Go; each must get the message once, the same.
		var mu sync.Mutex
		var got []string
		check := func(m Message) {
			var s string
			nodeCheck(m.Decode(&s) == nil, "decode %q", m.Raw())
			mu.Lock()
			defer mu.Unlock()
			got = append(got, s)
			if len(got) == 2 {
				nodeCheck(got[0] == got[1], "the two handlers got %q", got)
				os.Exit(2) // OK
			}
		}
		Self().OnMessage(check)
		Self().OnMessage(check)
		Self().Send("ready")
		select {}
	}
	helpers["node-action"] = func() {
		switch os.Getenv("NODE_ACTION") {
		case "disconnect":
			Self().Disconnect()
		case "kill", "destroy":
			Self().Kill(nil)
		}
		select {}
	}
	helpers["node-call-and-destroy"] = func() {
		nodeCheck(Self().IsConnected(), "IsConnected() is false at start")
		Self().Disconnect()
		select {}
	}
	helpers["node-destroy-1"] = func() {
		// cluster.worker.process.on('disconnect', () => cluster.worker.destroy())
		Self().OnDisconnect(func() { Self().Kill(nil) })
		// Node: disconnect() returns the worker; Go returns an error.
		err := Self().Disconnect()
		nodeCheck(err == nil, "Disconnect: %v", err)
		select {}
	}
}

// TestNodeBasic is test-cluster-basic: the primary-wide fork, online,
// listening and exit events each get the worker, which is in state none,
// online, listening and dead at each; the worker's own online, listening
// and exit events fire; its listening address is 127.0.0.1, type 4, a real
// port; its exit status is the process's; the worker id variable is gone
// from the worker's environment (checked in the worker).
//
// Go differs: Node asserts worker.id === 1, the first fork of its process;
// the tests share one process, so the id must be the one after the last
// fork. Node's address has an fd key (undefined); Address has none. The
// second half of the Node file (an env whose prototype holds NODE_UNIQUE_ID)
// is JavaScript prototype lookup, which has no Go meaning.
func TestNodeBasic(t *testing.T) {
	cluster.mu.Lock()
	wantID := cluster.lastID + 1
	cluster.mu.Unlock()
	var mu sync.Mutex
	own := map[string]int{}
	var ownAddr Address
	var ownExit ExitStatus
	var killOnce sync.Once
	w, ev := nodeFork(t, func(w *Worker) {
		note := func(kind string) { mu.Lock(); own[kind]++; mu.Unlock() }
		w.OnOnline(func() { note("online") })
		w.OnListening(func(a Address) {
			mu.Lock()
			ownAddr = a
			mu.Unlock()
			note("listening")
			killOnce.Do(func() { w.Kill(nil) })
		})
		w.OnExit(func(st ExitStatus) {
			mu.Lock()
			ownExit = st
			mu.Unlock()
			note("exit")
		})
	}, "node-http")
	if w.ID() != wantID {
		t.Errorf("worker id %d, want %d", w.ID(), wantID)
	}
	events := nodeEvents(t, w, ev)
	want := map[string]State{"fork": StateNone, "online": StateOnline, "listening": StateListening, "exit": StateDead}
	for kind, state := range want {
		found := false
		for _, e := range events {
			if e.kind == kind {
				found = true
				if e.state != state {
					t.Errorf("state at the %s event: %v, want %v", kind, e.state, state)
				}
				break
			}
		}
		if !found {
			t.Errorf("the primary-wide %s event did not fire", kind)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, kind := range []string{"online", "listening", "exit"} {
		if own[kind] != 1 {
			t.Errorf("the worker's %s event fired %d times, want once", kind, own[kind])
		}
	}
	if ownAddr.Host != "127.0.0.1" || ownAddr.Type != TCP4 || ownAddr.Type.String() != "4" || ownAddr.Port < 1 || ownAddr.Port > 65535 {
		t.Errorf("listening address %+v, want 127.0.0.1, type 4, a port in 1..65535", ownAddr)
	}
	if ownExit != w.exitStatus() {
		t.Errorf("the exit event got %v, the worker's status is %v", ownExit, w.exitStatus())
	}
}

// TestNodeWorkerDeath is test-cluster-worker-death: a worker that exits
// with 42 gives its exit event code 42 and no signal, and the primary-wide
// exit event gets that worker.
func TestNodeWorkerDeath(t *testing.T) {
	var st ExitStatus
	w, ev := nodeFork(t, func(w *Worker) { w.OnExit(func(s ExitStatus) { st = s }) }, "node-exit42")
	events := nodeEvents(t, w, ev)
	if st.Code != 42 || st.Signal != nil {
		t.Errorf("exit event: %v, want code 42, no signal", st)
	}
	if nodeCount(events, "exit") != 1 {
		t.Errorf("primary-wide exit events for the worker: %d, want 1", nodeCount(events, "exit"))
	}
}

// TestNodeWorkerIsDead is test-cluster-worker-isdead: IsDead is false right
// after Fork and in the worker, true in the exit handler.
func TestNodeWorkerIsDead(t *testing.T) {
	var deadAtExit bool
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(m Message) {
			var s string
			if m.Decode(&s) == nil && s == "readyToDie" {
				w.Kill(nil)
			}
		})
		w.OnExit(func(ExitStatus) { deadAtExit = w.IsDead() })
	}, "node-isdead")
	if w.IsDead() {
		t.Error("IsDead() is true right after Fork")
	}
	st := nodeExit(t, w)
	if st.Code == 3 {
		t.Error("IsDead() was true in the worker")
	}
	if !deadAtExit {
		t.Error("IsDead() is false in the exit handler")
	}
}

// TestNodeWorkerIsConnected is test-cluster-worker-isconnected: connected
// right after Fork and in the worker at start; not connected in the
// disconnect handlers, the primary's and both of the worker's (the worker's
// exit with 42 says they ran and saw it).
func TestNodeWorkerIsConnected(t *testing.T) {
	connectedAtDisconnect := true
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnDisconnect(func() { connectedAtDisconnect = w.IsConnected() })
		w.OnMessage(func(m Message) {
			var s string
			if m.Decode(&s) == nil && s == "readyToDisconnect" {
				w.Disconnect()
			}
		})
	}, "node-isconnected")
	if !w.IsConnected() {
		t.Error("IsConnected() is false right after Fork")
	}
	nodeWantExit(t, w, 42)
	if connectedAtDisconnect {
		t.Error("IsConnected() is true in the disconnect handler")
	}
}

// TestNodeWorkerInit is test-cluster-worker-init: the worker's message
// handler gets the message sent in the online handler, its answer reaches
// the primary, and disconnecting then succeeds (Node: disconnect() returns
// the worker; Go: a nil error).
func TestNodeWorkerInit(t *testing.T) {
	answer := make(chan bool, 1)
	var discErr error
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() { w.Send("foo") })
		w.OnMessage(func(m Message) {
			var b bool
			m.Decode(&b)
			answer <- b
			discErr = w.Disconnect()
		})
	}, "node-init")
	if !recv(t, answer, "the worker's answer") {
		t.Error("the worker did not get \"foo\"")
	}
	nodeWantExit(t, w, 0)
	if discErr != nil {
		t.Errorf("Disconnect: %v", discErr)
	}
}

// TestNodeWorkerEvents is test-cluster-worker-events: Send succeeds (Node:
// returns true); both of the worker's message handlers get the message, the
// same; the worker then exits with 2.
//
// Go differs: Node sends at once; a Go worker hands the messages that come
// before its first Self().OnMessage to that handler only (documented), so
// the primary sends once the worker says it has both handlers. Node's second
// half, process.emit('error') reaching cluster.worker's error handlers,
// forwards an event between two EventEmitters of the worker: Go has neither
// process object nor emit, so there is nothing to translate.
func TestNodeWorkerEvents(t *testing.T) {
	sendErr := make(chan error, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(Message) { sendErr <- w.Send("SOME MESSAGE") })
	}, "node-events")
	if err := recv(t, sendErr, "the worker's ready"); err != nil {
		t.Errorf("Send: %v", err)
	}
	nodeWantExit(t, w, 2)
}

// TestNodeKillDisconnect is test-cluster-kill-disconnect: a worker that
// disconnects itself, and one that kills itself, are both
// ExitedAfterDisconnect in their disconnect and exit handlers.
func TestNodeKillDisconnect(t *testing.T) {
	for _, action := range []string{"disconnect", "kill"} {
		var atDisconnect, atExit, sawDisconnect bool
		w, _ := nodeFork(t, func(w *Worker) {
			w.OnDisconnect(func() { sawDisconnect, atDisconnect = true, w.ExitedAfterDisconnect() })
			w.OnExit(func(ExitStatus) { atExit = w.ExitedAfterDisconnect() })
		}, "node-action", "NODE_ACTION="+action)
		waitDone(t, w)
		if !sawDisconnect || !atDisconnect || !atExit {
			t.Errorf("%s: disconnect event %v, ExitedAfterDisconnect at disconnect %v, at exit %v; want all true", action, sawDisconnect, atDisconnect, atExit)
		}
	}
}

// TestNodeCallAndDestroy is test-cluster-call-and-destroy: a worker that
// disconnects itself is connected before, not connected in the primary's
// disconnect handler, which kills it (Node: destroy) without harm.
func TestNodeCallAndDestroy(t *testing.T) {
	sawDisconnect, connected := false, true
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnDisconnect(func() {
			sawDisconnect, connected = true, w.IsConnected()
			w.Kill(nil)
		})
	}, "node-call-and-destroy")
	st := nodeExit(t, w)
	if st.Code == 3 {
		t.Error("the worker was not connected at start")
	}
	if !sawDisconnect || connected {
		t.Errorf("disconnect event %v, IsConnected in it %v; want true, false", sawDisconnect, connected)
	}
}

// TestNodeWorkerDestroy is test-cluster-worker-destroy: a worker that
// disconnects itself (and kills itself in its disconnect handler) and one
// that kills itself each give one disconnect and one exit event.
func TestNodeWorkerDestroy(t *testing.T) {
	count := func(w *Worker, c map[string]int, mu *sync.Mutex) {
		w.OnDisconnect(func() { mu.Lock(); c["disconnect"]++; mu.Unlock() })
		w.OnExit(func(ExitStatus) { mu.Lock(); c["exit"]++; mu.Unlock() })
	}
	var mu sync.Mutex
	c1, c2 := map[string]int{}, map[string]int{}
	w1, _ := nodeFork(t, func(w *Worker) { count(w, c1, &mu) }, "node-destroy-1")
	w2, _ := nodeFork(t, func(w *Worker) { count(w, c2, &mu) }, "node-action", "NODE_ACTION=destroy")
	st1 := nodeExit(t, w1)
	nodeExit(t, w2)
	if st1.Code == 3 {
		t.Error("worker 1's Disconnect failed")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, c := range []map[string]int{c1, c2} {
		if c["disconnect"] != 1 || c["exit"] != 1 {
			t.Errorf("worker %d: %v, want one disconnect and one exit", i+1, c)
		}
	}
}
