//go:build unix

package clusternet

// Node.js workers sharing addresses with each other and with Go workers
// under SchedRR: the round robin across both kinds, a connection a Node
// worker refuses going to another, and the connections a Node worker had
// not taken when it died going to another.

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	// A Go worker beside Node workers: it answers "go <id>" on $ADDR.
	helpers["js-go-http"] = func() {
		ln, err := Listen("tcp", os.Getenv("ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "js-go-http:", err)
			os.Exit(3)
		}
		http.Serve(ln, http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
			rw.Header().Set("Connection", "close")
			fmt.Fprintf(rw, "go %d\n", Self().ID())
		}))
	}
}

// jsServed makes n requests to addr, concurrently if parallel, and counts
// the answers by body.
func jsServed(t *testing.T, addr string, n int, parallel bool) map[string]int {
	t.Helper()
	var mu sync.Mutex
	got := make(map[string]int)
	var wg sync.WaitGroup
	for range n {
		get := func() {
			body := strings.TrimSpace(jsGet(t, "http://"+addr+"/"))
			mu.Lock()
			got[body]++
			mu.Unlock()
		}
		if !parallel {
			get()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			get()
		}()
	}
	wg.Wait()
	return got
}

// TestNodeJSMixedFleet: 2 Go and 2 Node workers listen on one port under
// SchedRR; all four answer.
func TestNodeJSMixedFleet(t *testing.T) {
	setPolicy(t, SchedRR)
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	var ws []*Worker
	var evs []*jsEvents
	listening := make(chan int, 4)
	add := func(w *Worker) {
		ws = append(ws, w)
		evs = append(evs, watchJS(w))
		w.OnListening(func(Address) { listening <- w.ID() })
	}
	for range 2 {
		add(fork(t, "js-go-http", "ADDR="+addr))
	}
	for range 2 {
		add(forkJS(t, "whoami.js", "PORT="+port, "HOST=127.0.0.1"))
	}
	for range ws {
		recv(t, listening, "a worker listening")
	}
	got := jsServed(t, addr, 80, false)
	t.Logf("answers: %v", got)
	for _, w := range ws {
		kind := "go"
		if w.node != nil {
			kind = "node"
		}
		if got[fmt.Sprintf("%s %d", kind, w.ID())] == 0 {
			t.Errorf("%s worker %d served nothing: %v", kind, w.ID(), got)
		}
	}
	if err := Disconnect(testContext(t)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		ev.noErrors(t)
	}
}

// jsStallPair forks two whoami.js workers on one free port under SchedRR
// with window (Settings.NodeWindow): first one with env, which makes it
// stall, then one that takes what it does not. It waits until both listen
// and the first says it stalls, and returns the address, the two workers,
// the first one's messages from then on, and both workers' events.
func jsStallPair(t *testing.T, window int, env string) (addr string, staller, taker *Worker, said <-chan Message, evs []*jsEvents) {
	t.Helper()
	setPolicy(t, SchedRR)
	addr = freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	s := jsSettings(t, "whoami.js")
	s.NodeWindow = window
	staller = forkJSWith(t, s, "PORT="+port, "HOST=127.0.0.1", env)
	evs = append(evs, watchJS(staller))
	said = messages(staller)
	taker = forkJSWith(t, s, "PORT="+port, "HOST=127.0.0.1")
	evs = append(evs, watchJS(taker))
	for _, ev := range evs {
		ev.next(t, "online")
		ev.next(t, "listening")
	}
	if m := recv(t, said, "the first worker stalling"); string(m.Raw()) != `"stalling"` {
		t.Fatalf("the first worker says %s", m.Raw())
	}
	return addr, staller, taker, said, evs
}

// TestNodeJSRefusedHandedOn: a Node worker refuses the connections the
// primary handed it (accepted: false) when its server is gone by the time
// it reads them: its event loop is blocked while they are sent, then it
// closes the server. Each goes to the other worker, none is lost, and the
// primary keeps no descriptor.
//
// (Node 20 also refuses past a server's maxConnections; Debian's Node 18,
// which CI installs, may not, so the test makes the refusal the way every
// version does.)
func TestNodeJSRefusedHandedOn(t *testing.T) {
	for _, window := range []int{0, 4} {
		t.Run(fmt.Sprintf("window=%d", window), func(t *testing.T) {
			fds := openFDs(t)
			addr, refuser, taker, said, evs := jsStallPair(t, window, "STALL_THEN_CLOSE=500")
			for _, ev := range evs {
				defer ev.noErrors(t)
			}
			const n = 30
			got := jsServed(t, addr, n, true)
			if m := recv(t, said, "the refuser's server closing"); string(m.Raw()) != `"closed"` {
				t.Fatalf("the refuser says %s", m.Raw())
			}
			if want := fmt.Sprintf("node %d", taker.ID()); got[want] != n {
				t.Errorf("answers %v, want all %d from %s", got, n, want)
			}
			st := refuser.Stats()
			t.Logf("the refuser was handed %d, accepted %d", st.Handed, st.Accepted)
			if st.Handed == 0 || st.Accepted != 0 {
				t.Errorf("the refusing worker was handed %d and accepted %d, want some and none", st.Handed, st.Accepted)
			}
			if err := Disconnect(testContext(t)); err != nil {
				t.Fatal(err)
			}
			fdsAtMost(t, fds, "after the workers")
		})
	}
}

// TestNodeJSWorkerDeathLosesNothing: a Node worker stops reading its
// channel with connections in flight to it, and is killed; the other
// worker serves every one of them.
func TestNodeJSWorkerDeathLosesNothing(t *testing.T) {
	for _, window := range []int{0, 4} {
		t.Run(fmt.Sprintf("window=%d", window), func(t *testing.T) {
			fds := openFDs(t)
			addr, staller, taker, _, _ := jsStallPair(t, window, "STALL=1")
			const n = 12
			done := make(chan map[string]int, 1)
			go func() { done <- jsServed(t, addr, n, true) }()
			deadline := time.Now().Add(testTimeout)
			for staller.Stats().Handed == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if staller.Stats().Handed == 0 {
				t.Fatal("the stalled worker was never handed a connection")
			}
			t.Logf("handed to the stalled worker before its death: %d", staller.Stats().Handed)
			staller.Kill(os.Kill)
			got := recv(t, done, "the requests")
			if want := fmt.Sprintf("node %d", taker.ID()); got[want] != n {
				t.Errorf("answers %v, want all %d from %s", got, n, want)
			}
			if err := Disconnect(testContext(t)); err != nil {
				t.Fatal(err)
			}
			fdsAtMost(t, fds, "after the workers")
		})
	}
}
