package clusternet

// Node's tests of cluster.disconnect and of workers leaving together:
// test-cluster-disconnect, -disconnect-before-exit, -disconnect-idle-worker,
// -disconnect-with-no-workers, -disconnect-leak, -disconnect-race,
// -disconnect-unshared-tcp, -disconnect-unshared-udp,
// -disconnect-exitedAfterDisconnect-race, -concurrent-disconnect,
// -process-disconnect, -shared-leak, -server-restart-none, -server-restart-rr,
// -worker-no-exit, -worker-wait-server-close.

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

func init() {
	// net.createServer(...).listen(0) (on loopback: the tests listen on
	// nothing else), answering every connection with NODE_REPLY if set;
	// says "listening" once it listens if NODE_SAY is set.
	helpers["node-listen"] = func() {
		network := "tcp"
		if os.Getenv("NODE_UDP") != "" {
			pc, err := ListenPacket("udp4", "127.0.0.1:0")
			nodeCheck(err == nil, "ListenPacket: %v", err)
			_ = pc
			select {}
		}
		ln, err := Listen(network, "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		if os.Getenv("NODE_SAY") != "" {
			Self().Send("listening")
		}
		reply := os.Getenv("NODE_REPLY")
		for {
			c, err := ln.Accept()
			if err != nil {
				select {}
			}
			if reply != "" {
				io.WriteString(c, reply)
			}
			c.Close()
		}
	}
	helpers["node-listen-twice-echo"] = func() {
		for range 2 {
			ln, err := Listen("tcp", "127.0.0.1:0")
			nodeCheck(err == nil, "Listen: %v", err)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					io.WriteString(c, "echo")
					c.Close()
				}
			}()
		}
		select {}
	}
	helpers["node-self-disconnect-race"] = func() {
		var fired sync.Mutex
		eventFired := false
		Self().Disconnect()
		// Node: process.nextTick asserts that the disconnect event has not
		// fired yet ("disconnect event should wait for ack"): in Go, that it
		// has not fired when Disconnect returns.
		fired.Lock()
		nodeCheck(!eventFired, "the disconnect event fired before Disconnect returned")
		fired.Unlock()
		Self().OnDisconnect(func() { fired.Lock(); eventFired = true; fired.Unlock() })
		select {}
	}
	helpers["node-on-message-act"] = func() {
		Self().OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			if Self().IsConnected() {
				switch s {
				case "disconnect":
					Self().Disconnect()
				case "destroy":
					Self().Kill(nil)
				}
			}
		})
		select {}
	}
	helpers["node-process-disconnect"] = func() {
		_, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		Self().CloseChannel()
		select {}
	}
	helpers["node-server-restart"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		if os.Getenv("NODE_RESTART") != "" {
			nodeCheck(ln.Close() == nil, "Close: %v", err)
			ln, err = Listen("tcp", "127.0.0.1:0")
			nodeCheck(err == nil, "Listen again: %v", err)
			nodeCheck(ln.Close() == nil, "Close again")
			Self().CloseChannel()
		}
		select {}
	}
	helpers["node-connect"] = func() {
		var conns []net.Conn // kept open
		Self().OnMessage(func(m Message) {
			var addr string
			m.Decode(&addr)
			c, err := net.Dial("tcp", addr) // a plain connection, not the cluster's
			nodeCheck(err == nil, "Dial: %v", err)
			conns = append(conns, c)
		})
		select {}
	}
	helpers["node-wait-server-close"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		closed := make(chan struct{}) // the server's close event
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					close(closed)
					return
				}
				go func() {
					c.Write([]byte("."))
					io.Copy(io.Discard, c)
					c.Close()
				}()
			}
		}()
		Self().OnDisconnect(func() {
			select {
			case <-closed:
				os.Exit(42)
			case <-time.After(testTimeout):
				nodeCheck(false, "the server was not closed when the disconnect event came")
			}
		})
		select {}
	}
}

// disconnectAll runs Disconnect(ctx) on a goroutine: called in an event
// handler it would wait for events that come after the handler. Node's
// cluster.disconnect(callback) does not block; the callback is the channel.
func disconnectAll(t testing.TB) <-chan error {
	done := make(chan error, 1)
	ctx := testContext(t)
	go func() { done <- Disconnect(ctx) }()
	return done
}

// TestNodeDisconnect is test-cluster-disconnect: eight workers each listen
// twice on port 0 (sixteen listening events, two ports); a connection to
// each port gets "echo"; Disconnect then ends them all; and the whole again.
func TestNodeDisconnect(t *testing.T) {
	for round := range 2 {
		var mu sync.Mutex
		ports := map[int]bool{}
		listening := 0
		var ws []*Worker
		for range 8 {
			w, _ := nodeFork(t, func(w *Worker) {
				w.OnListening(func(a Address) {
					mu.Lock()
					ports[a.Port] = true
					listening++
					mu.Unlock()
				})
			}, "node-listen-twice-echo")
			ws = append(ws, w)
		}
		deadline := time.Now().Add(testTimeout)
		for {
			mu.Lock()
			n := listening
			mu.Unlock()
			if n == 16 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d listening events, want 16", round, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		if len(ports) != 2 {
			t.Errorf("round %d: ports %v, want 2", round, ports)
		}
		for port := range ports {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), testTimeout)
			if err != nil {
				t.Fatalf("dial port %d: %v", port, err)
			}
			c.SetDeadline(time.Now().Add(testTimeout))
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(b) != "echo" {
				t.Errorf("port %d answered %q, %v; want \"echo\"", port, b, err)
			}
		}
		mu.Unlock()
		if err := Disconnect(testContext(t)); err != nil {
			t.Fatalf("round %d: Disconnect: %v", round, err)
		}
		for _, w := range ws {
			if !w.IsDead() {
				t.Errorf("worker %d still running after Disconnect", w.ID())
			}
		}
	}
}

// TestNodeDisconnectBeforeExit is test-cluster-disconnect-before-exit: a
// worker disconnected in its online handler, then Disconnect of the whole
// cluster in its disconnect handler: it completes.
func TestNodeDisconnectBeforeExit(t *testing.T) {
	done := make(chan (<-chan error), 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() { w.Disconnect() })
		w.OnDisconnect(func() { done <- disconnectAll(t) })
	}, "idle")
	if err := recv(t, recv(t, done, "the disconnect event"), "Disconnect"); err != nil {
		t.Errorf("Disconnect: %v", err)
	}
	waitDone(t, w)
}

// TestNodeDisconnectIdleWorker is test-cluster-disconnect-idle-worker: two
// idle workers; Disconnect returns with Workers() empty.
func TestNodeDisconnectIdleWorker(t *testing.T) {
	fork(t, "idle")
	fork(t, "idle")
	if err := Disconnect(testContext(t)); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if ws := Workers(); len(ws) != 0 {
		t.Errorf("Workers() = %d workers after Disconnect, want none", len(ws))
	}
}

// TestNodeDisconnectWithNoWorkers is test-cluster-disconnect-with-no-workers:
// Disconnect with no worker completes (Node: the callback is called, later).
func TestNodeDisconnectWithNoWorkers(t *testing.T) {
	if err := Disconnect(testContext(t)); err != nil {
		t.Errorf("Disconnect: %v", err)
	}
}

// TestNodeDisconnectLeak is test-cluster-disconnect-leak: under SchedNone, a
// worker listening on port 0 and disconnected at once gets its disconnect
// and exit events and the primary-wide exit event, and nothing is left open
// (Node: the primary exits, so no handle leaked).
func TestNodeDisconnectLeak(t *testing.T) {
	setPolicy(t, SchedNone)
	lnCheckFDs(t)
	var mu sync.Mutex
	own := map[string]int{}
	w, ev := nodeFork(t, func(w *Worker) {
		w.OnDisconnect(func() { mu.Lock(); own["disconnect"]++; mu.Unlock() })
		w.OnExit(func(ExitStatus) { mu.Lock(); own["exit"]++; mu.Unlock() })
	}, "node-listen")
	if err := Disconnect(testContext(t)); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	events := nodeEvents(t, w, ev)
	mu.Lock()
	defer mu.Unlock()
	if own["disconnect"] != 1 || own["exit"] != 1 || nodeCount(events, "exit") != 1 {
		t.Errorf("worker events %v, primary-wide exit events %d; want one of each", own, nodeCount(events, "exit"))
	}
	if sa := lnSharedAddr("tcp", "127.0.0.1:0"); sa != nil {
		t.Errorf("the primary still has a server for 127.0.0.1:0")
	}
}

// TestNodeDisconnectRace is test-cluster-disconnect-race: under SchedNone,
// the first worker is disconnected just after a second one, listening on
// the same address, is forked; the second is disconnected when online;
// both exit with code 0.
func TestNodeDisconnectRace(t *testing.T) {
	require(t, "signals") // Node skips it on Windows
	setPolicy(t, SchedNone)
	second := make(chan *Worker, 1)
	var once sync.Once
	w1, _ := nodeFork(t, nil, "node-listen", "NODE_SAY=1")
	w1.OnMessage(func(Message) {
		once.Do(func() {
			w2, _ := nodeFork(t, func(w *Worker) { w.OnOnline(func() { w.Disconnect() }) }, "node-listen", "NODE_SAY=1")
			w1.Disconnect()
			second <- w2
		})
	})
	w2 := recv(t, second, "worker 1's listening")
	nodeWantExit(t, w1, 0)
	nodeWantExit(t, w2, 0)
}

// TestNodeDisconnectUnsharedTCP and ...UDP are
// test-cluster-disconnect-unshared-tcp and -udp: under SchedNone, an idle
// worker is disconnected once a second one listens, then the cluster is:
// Disconnect completes.
func TestNodeDisconnectUnsharedTCP(t *testing.T) { nodeDisconnectUnshared(t, false) }

func TestNodeDisconnectUnsharedUDP(t *testing.T) {
	require(t, "udp")
	nodeDisconnectUnshared(t, true)
}

func nodeDisconnectUnshared(t *testing.T, udp bool) {
	setPolicy(t, SchedNone)
	done := make(chan (<-chan error), 1)
	env := []string{}
	if udp {
		env = append(env, "NODE_UDP=1")
	}
	nodeFork(t, func(unbound *Worker) {
		unbound.OnOnline(func() {
			nodeFork(t, func(b *Worker) {
				b.OnListening(func(Address) {
					unbound.Disconnect()
				})
			}, "node-listen", env...)
		})
		w := unbound
		w.OnDisconnect(func() { done <- disconnectAll(t) })
	}, "idle")
	if err := recv(t, recv(t, done, "the idle worker's disconnect"), "Disconnect"); err != nil {
		t.Errorf("Disconnect: %v", err)
	}
}

// TestNodeDisconnectExitedAfterDisconnectRace is
// test-cluster-disconnect-exitedAfterDisconnect-race: a worker that
// disconnects itself first thing exits with code 0, and its disconnect event
// waits for the primary's acknowledgement (not yet fired when Disconnect
// returns).
func TestNodeDisconnectExitedAfterDisconnectRace(t *testing.T) {
	w, ev := nodeFork(t, nil, "node-self-disconnect-race")
	for _, e := range nodeEvents(t, w, ev) {
		if e.kind == "exit" && (e.st.Code != 0 || e.st.Signal != nil) {
			t.Errorf("exit %v, want code 0", e.st)
		}
	}
}

// TestNodeConcurrentDisconnect is test-cluster-concurrent-disconnect: one
// worker per CPU; once all are online, half disconnect themselves and half
// kill themselves (Node: destroy); at each disconnect event every worker
// still connected is told to disconnect. Every worker exits with code 0 and
// no signal. Node accepts EPIPE or ECONNRESET errors from the sends; here a
// send to a worker that has just gone returns ErrChannelClosed.
func TestNodeConcurrentDisconnect(t *testing.T) {
	n := max(runtime.NumCPU(), 2)
	var mu sync.Mutex
	var ws []*Worker
	online := 0
	sendAll := func(msg func(i int) string) {
		mu.Lock()
		all := append([]*Worker(nil), ws...)
		mu.Unlock()
		for i, w := range all {
			if w.IsConnected() {
				if err := w.Send(msg(i)); err != nil && !errors.Is(err, ErrChannelClosed) {
					t.Errorf("Send to worker %d: %v", w.ID(), err)
				}
			}
		}
	}
	ready := make(chan struct{})
	for range n {
		w, _ := nodeFork(t, func(w *Worker) {
			w.OnOnline(func() {
				mu.Lock()
				online++
				all := online == n
				mu.Unlock()
				if all {
					close(ready)
				}
			})
			w.OnDisconnect(func() { sendAll(func(int) string { return "disconnect" }) })
		}, "node-on-message-act")
		mu.Lock()
		ws = append(ws, w)
		mu.Unlock()
	}
	recv(t, ready, "every worker online")
	sendAll(func(i int) string {
		if i%2 == 1 {
			return "disconnect"
		}
		return "destroy"
	})
	for _, w := range ws {
		nodeWantExit(t, w, 0)
	}
}

// TestNodeProcessDisconnect is test-cluster-process-disconnect: a worker
// that closes its channel (process.disconnect()) once it listens exits with
// code 0 and no signal.
func TestNodeProcessDisconnect(t *testing.T) {
	w, _ := nodeFork(t, nil, "node-process-disconnect")
	nodeWantExit(t, w, 0)
}

// TestNodeSharedLeak is test-cluster-shared-leak: under SchedNone, a second
// worker forked once the first listens; a connection once it is online;
// then both disconnected: both exit with code 0 and no signal, and once
// both are gone Workers() is empty.
func TestNodeSharedLeak(t *testing.T) {
	setPolicy(t, SchedNone)
	var conn net.Conn
	connected := make(chan *Worker, 1)
	var once sync.Once
	var w2 *Worker
	w1, _ := nodeFork(t, func(w1 *Worker) {
		w1.OnListening(func(a Address) {
			once.Do(func() {
				w2, _ = nodeFork(t, func(w2 *Worker) {
					w2.OnOnline(func() {
						var err error
						conn, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(a.Port)), testTimeout)
						if err != nil {
							t.Errorf("dial: %v", err)
						}
						w1.Disconnect()
						w2.Disconnect()
						connected <- w2
					})
				}, "node-listen", "NODE_REPLY=bye")
			})
		})
	}, "node-listen", "NODE_REPLY=bye")
	recv(t, connected, "the second worker online")
	nodeWantExit(t, w1, 0)
	nodeWantExit(t, w2, 0)
	if n := len(Workers()); n != 0 {
		t.Errorf("Workers() has %d workers once both exited", n)
	}
	if conn != nil {
		conn.Close()
	}
}

// TestNodeServerRestartNone and ...RR are test-cluster-server-restart-none
// and -rr: a second worker closes its listener, listens again, closes it
// and closes its channel; it exits with code 0, then the first, disconnected,
// does too.
func TestNodeServerRestartNone(t *testing.T) { nodeServerRestart(t, SchedNone) }

func TestNodeServerRestartRR(t *testing.T) { nodeServerRestart(t, SchedRR) }

func nodeServerRestart(t *testing.T, p Policy) {
	lnUsePolicy(t, p)
	second := make(chan *Worker, 1)
	var once sync.Once
	w1, _ := nodeFork(t, func(w1 *Worker) {
		w1.OnListening(func(Address) {
			once.Do(func() {
				w2, _ := nodeFork(t, func(w2 *Worker) {
					w2.OnExit(func(ExitStatus) { w1.Disconnect() })
				}, "node-server-restart", "NODE_RESTART=1")
				second <- w2
			})
		})
	}, "node-server-restart")
	w2 := recv(t, second, "worker 1 listening")
	nodeWantExit(t, w2, 0)
	nodeWantExit(t, w1, 0)
}

// TestNodeWorkerNoExit is test-cluster-worker-no-exit, the Go equivalent:
// a disconnected worker that still has a connection of its own open (not a
// cluster connection: one it dialled).
//
// Go differs, on purpose (README, worker.disconnect()): Node's worker stays
// alive until that connection is destroyed, its event loop not being empty;
// Go has no event loop, so the worker exits (code 0, after disconnect) once
// its cluster listeners and their connections are done, whatever else it
// has open. The test asserts that instead.
func TestNodeWorkerNoExit(t *testing.T) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() { w.Send(srv.Addr().String()) })
	}, "node-connect")
	conn, err := srv.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv.Close()
	w.Disconnect()
	nodeWantExit(t, w, 0)
	if !w.ExitedAfterDisconnect() {
		t.Error("ExitedAfterDisconnect is false")
	}
}

// TestNodeWorkerWaitServerClose is test-cluster-worker-wait-server-close: a
// worker disconnected while a client holds a connection to it: its server is
// closed by the time its disconnect event comes (the worker exits with 42
// when it was), which waits for the client to end the connection.
func TestNodeWorkerWaitServerClose(t *testing.T) {
	var once sync.Once
	addr := make(chan int, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnListening(func(a Address) { once.Do(func() { addr <- a.Port }) })
	}, "node-wait-server-close")
	port := recv(t, addr, "the listening event")
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := bufio.NewReader(c).ReadByte(); err != nil {
		t.Fatalf("reading the worker's byte: %v", err)
	}
	w.Disconnect()
	c.Close() // socket.end()
	nodeWantExit(t, w, 42)
}
