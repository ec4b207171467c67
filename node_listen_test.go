package clusternet

// Node's tests of listening in workers: test-cluster-listening-port,
// -net-listen, -child-index-net, -shared-handle-bind-error, -ipc-throw,
// -worker-disconnect-on-error, -eaddrinuse, -bind-twice, -net-reuseport,
// -bind-privileged-port, -shared-handle-bind-privileged-port,
// test/sequential/test-cluster-port-reuse-between-workers. Node listens on
// every interface where a port is given alone; these tests listen on
// 127.0.0.1, the only address the tests use.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

func init() {
	helpers["node-listen-exit"] = func() {
		// net.createServer().listen(process.exit): exit once listening.
		_, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		os.Exit(0)
	}
	helpers["node-child-index-net"] = func() {
		// Two at a time: listen on port 0, close, listen on port 0, close.
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for range 2 {
					ln, err := Listen("tcp", "127.0.0.1:0")
					nodeCheck(err == nil, "Listen: %v", err)
					nodeCheck(ln.Close() == nil, "Close")
				}
			})
		}
		wg.Wait()
		os.Exit(0)
	}
	// Listen on NODE_ADDR (or the address the primary sends), which must
	// fail with NODE_WANT (EADDRINUSE, EACCES); then NODE_THEN: "close"
	// (process.disconnect()), "disconnect" (cluster.worker.disconnect()), or
	// "retry" (tell the primary, wait for its word, listen again and exit).
	helpers["node-listen-fail"] = func() {
		network := os.Getenv("NODE_NET")
		if network == "" {
			network = "tcp"
		}
		run := func(addr string) {
			_, err := Listen(network, addr)
			want := map[string]error{"EADDRINUSE": syscall.EADDRINUSE, "EACCES": syscall.EACCES}[os.Getenv("NODE_WANT")]
			nodeCheck(err != nil && (errors.Is(err, want) || want == syscall.EADDRINUSE && lnAddrInUse(err)), "Listen(%s): %v, want %s", addr, err, os.Getenv("NODE_WANT"))
			switch os.Getenv("NODE_THEN") {
			case "close":
				Self().CloseChannel()
			case "disconnect":
				Self().Disconnect()
			case "retry":
				Self().OnMessage(func(m Message) {
					ln, err := Listen(network, addr)
					nodeCheck(err == nil, "Listen again: %v", err)
					ln.Close()
					os.Exit(0)
				})
				Self().Send("stop-listening")
			case "report":
				Self().Send(os.Getenv("NODE_WANT"))
			}
		}
		if addr := os.Getenv("NODE_ADDR"); addr != "" {
			run(addr)
		} else {
			var once sync.Once
			Self().OnMessage(func(m Message) {
				var addr string
				m.Decode(&addr)
				once.Do(func() { go run(addr) })
			})
		}
		select {}
	}
	helpers["node-reuseport"] = func() {
		lc := ListenConfig{ReusePort: true}
		ctx := context.Background()
		if os.Getenv("NODE_UDP") != "" {
			pc1, err := lc.ListenPacket(ctx, "udp4", "127.0.0.1:0")
			nodeCheck(err == nil, "ListenPacket: %v", err)
			pc2, err := lc.ListenPacket(ctx, "udp4", pc1.LocalAddr().String())
			nodeCheck(err == nil, "ListenPacket on the same port: %v", err)
			nodeCheck(pc1.Close() == nil && pc2.Close() == nil, "Close")
		} else {
			ln1, err := lc.Listen(ctx, "tcp4", "127.0.0.1:0")
			nodeCheck(err == nil, "Listen: %v", err)
			ln2, err := lc.Listen(ctx, "tcp4", ln1.Addr().String())
			nodeCheck(err == nil, "Listen on the same port: %v", err)
			nodeCheck(ln1.Close() == nil && ln2.Close() == nil, "Close")
		}
		Self().Disconnect()
		select {}
	}
	helpers["node-port-reuse"] = func() {
		addr := os.Getenv("NODE_ADDR")
		ln1, err := Listen("tcp", addr)
		nodeCheck(err == nil, "Listen: %v", err)
		if os.Getenv("NODE_ROLE") == "worker2" {
			Self().Send("WORKER2_SERVER1_STARTED")
			select {}
		}
		// A second server on the same address in the same worker fails.
		_, err = Listen("tcp", addr)
		nodeCheck(err != nil, "a second Listen(%s) in one worker succeeded", addr)
		nodeCheck(ln1.Close() == nil, "Close")
		Self().OnMessage(func(m Message) {
			ln2, err := Listen("tcp", addr)
			nodeCheck(err == nil, "Listen again: %v", err)
			nodeCheck(ln2.Close() == nil, "Close again")
			Self().Send("WORKER1_SERVER2_CLOSED")
		})
		Self().Send("WORKER1_SERVER1_CLOSED")
		select {}
	}
	helpers["node-bind-port"] = func() {
		_, err := Listen("tcp", os.Getenv("NODE_ADDR"))
		if lnAddrInUse(err) {
			Self().Send("EADDRINUSE")
		} else {
			Self().Send(fmt.Sprintf("Listen: %v", err))
		}
		select {}
	}
	// The second primary of test-cluster-bind-twice: its worker listens on
	// the port the first cluster's worker holds; it prints what it got.
	primaries["node-bind-twice"] = func() {
		w, err := Fork(envHelper+"=node-bind-port", "NODE_ADDR="+os.Getenv("NODE_ADDR"))
		if err != nil {
			fmt.Println("Fork:", err)
			return
		}
		got := make(chan string, 1)
		w.OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			got <- s
		})
		fmt.Println(<-got)
		w.Kill(nil)
		<-w.Done()
	}
}

// TestNodeListeningPort is test-cluster-listening-port: the primary-wide
// listening event of a worker listening on port 0 has a real port.
func TestNodeListeningPort(t *testing.T) {
	var once sync.Once
	port := make(chan int, 1)
	nodeFork(t, func(w *Worker) {
		w.OnListening(func(a Address) { once.Do(func() { port <- a.Port; w.Kill(nil) }) })
	}, "node-http")
	if p := recv(t, port, "the listening event"); p <= 0 {
		t.Errorf("listening on port %d", p)
	}
}

// TestNodeNetListen is test-cluster-net-listen: a worker that exits once it
// listens on port 0 exits with code 0.
func TestNodeNetListen(t *testing.T) {
	w, _ := nodeFork(t, nil, "node-listen-exit")
	nodeWantExit(t, w, 0)
}

// TestNodeChildIndexNet is test-cluster-child-index-net: in one worker, two
// at a time, listen on port 0, close, listen on port 0 again, close: every
// listen succeeds and the worker exits with code 0.
func TestNodeChildIndexNet(t *testing.T) {
	w, _ := nodeFork(t, nil, "node-child-index-net")
	nodeWantExit(t, w, 0)
}

// nodeHeld listens on a loopback port in the primary itself, as Node's
// primary does with net.createServer().listen(0).
func nodeHeld(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestNodeSharedHandleBindError is test-cluster-shared-handle-bind-error:
// under SchedNone, a worker listening on a port the primary holds gets
// EADDRINUSE; it closes its channel and exits with code 0.
func TestNodeSharedHandleBindError(t *testing.T) {
	setPolicy(t, SchedNone)
	held := nodeHeld(t)
	w, _ := nodeFork(t, nil, "node-listen-fail", "NODE_ADDR="+held.Addr().String(), "NODE_WANT=EADDRINUSE", "NODE_THEN=close")
	nodeWantExit(t, w, 0)
}

// TestNodeIPCThrow is test-cluster-ipc-throw: under SchedRR, a worker
// listening on a port the primary holds gets the error and disconnects; its
// exit event follows.
//
// Go differs: Node's worker then throws from the error handler and its
// uncaughtException handler must see it; Go has no exceptions (the error is
// Listen's return value), so the test checks the error and the exit.
func TestNodeIPCThrow(t *testing.T) {
	lnUsePolicy(t, SchedRR)
	held := nodeHeld(t)
	w, _ := nodeFork(t, nil, "node-listen-fail", "NODE_ADDR="+held.Addr().String(), "NODE_WANT=EADDRINUSE", "NODE_THEN=disconnect")
	nodeWantExit(t, w, 0)
}

// TestNodeWorkerDisconnectOnError is test-cluster-worker-disconnect-on-error:
// under SchedNone, a worker told the port the primary holds gets the listen
// error and disconnects itself; its exit event follows.
func TestNodeWorkerDisconnectOnError(t *testing.T) {
	setPolicy(t, SchedNone)
	held := nodeHeld(t)
	w, _ := nodeFork(t, nil, "node-listen-fail", "NODE_WANT=EADDRINUSE", "NODE_THEN=disconnect")
	if err := w.Send(held.Addr().String()); err != nil {
		t.Fatal(err)
	}
	nodeWantExit(t, w, 0)
}

// TestNodeEADDRINUSE is test-cluster-eaddrinuse: a worker's listen on a port
// the primary holds fails with EADDRINUSE; once the primary closes its
// server, the same listen succeeds.
//
// Node's file runs the worker as a plain child process (child_process.fork,
// not cluster); the Go port runs a cluster worker, whose listen goes through
// the primary: a failed bind there must leave nothing behind that stops the
// next one.
func TestNodeEADDRINUSE(t *testing.T) {
	held := nodeHeld(t)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(m Message) {
			var s string
			if m.Decode(&s) == nil && s == "stop-listening" {
				held.Close()
				w.Send("stopped-listening")
			}
		})
	}, "node-listen-fail", "NODE_ADDR="+held.Addr().String(), "NODE_WANT=EADDRINUSE", "NODE_THEN=retry")
	nodeWantExit(t, w, 0)
}

// TestNodeBindTwice is test-cluster-bind-twice: two clusters, each a primary
// with one worker; the second's worker listening on the port the first's
// holds gets EADDRINUSE. The first cluster is this process.
func TestNodeBindTwice(t *testing.T) {
	var once sync.Once
	port := make(chan int, 1)
	nodeFork(t, func(w *Worker) {
		w.OnListening(func(a Address) { once.Do(func() { port <- a.Port }) })
	}, "node-http")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(recv(t, port, "the first cluster's worker listening")))
	p := startPrimary(t, "node-bind-twice", "NODE_ADDR="+addr)
	if got := p.line(t); got != "EADDRINUSE" {
		t.Errorf("the second cluster's worker: %s, want EADDRINUSE", got)
	}
	if err := p.wait(t); err != nil {
		t.Errorf("the second primary: %v", err)
	}
}

// TestNodeNetReuseport is test-cluster-net-reuseport: with reusePort, two
// servers of one worker listen on the same port; both close; the worker
// disconnects and exits with code 0.
//
// Go differs: Node's worker binds those sockets itself (cluster._getServer
// must not be called); ListenConfig.ReusePort asks the primary for a
// SO_REUSEPORT socket of the worker's own (documented), so the test does
// not assert who binds.
func TestNodeNetReuseport(t *testing.T) {
	require(t, "reuseport")
	w, _ := nodeFork(t, nil, "node-reuseport")
	nodeWantExit(t, w, 0)
}

// TestNodeBindPrivilegedPort and TestNodeSharedHandleBindPrivilegedPort are
// test-cluster-bind-privileged-port and
// -shared-handle-bind-privileged-port: an unprivileged worker listening on
// port 42 gets EACCES (under the default policy and under SchedNone),
// closes its channel and exits with code 0. Skipped where Node skips them:
// as root, where port 42 is unprivileged, on macOS and Windows.
func TestNodeBindPrivilegedPort(t *testing.T) { nodePrivilegedPort(t, 0) }

func TestNodeSharedHandleBindPrivilegedPort(t *testing.T) { nodePrivilegedPort(t, SchedNone) }

func nodePrivilegedPort(t *testing.T, p Policy) {
	nodeSkipIfPort42Allowed(t)
	if p != 0 {
		setPolicy(t, p)
	}
	w, _ := nodeFork(t, nil, "node-listen-fail", "NODE_ADDR=127.0.0.1:42", "NODE_WANT=EACCES", "NODE_THEN=close")
	nodeWantExit(t, w, 0)
}

// TestNodePortReuseBetweenWorkers is
// test/sequential/test-cluster-port-reuse-between-workers: worker 1 listens
// on a port, fails to listen on it a second time, closes; worker 2 then
// listens on it; worker 1 listens on it again (sharing it with worker 2) and
// closes. Node uses port 8000 on '::'; the port here is a free loopback one.
func TestNodePortReuseBetweenWorkers(t *testing.T) {
	addr := freePort(t)
	var w2 *Worker
	var w1 *Worker // set in its fork event, before any of its messages
	done := make(chan struct{})
	onMessage := func(m Message) {
		var s string
		m.Decode(&s)
		switch s {
		case "WORKER1_SERVER1_CLOSED":
			w2, _ = nodeFork(t, func(w *Worker) { w.OnMessage(func(m Message) { w1.Send("WORKER2_SERVER1_STARTED") }) }, "node-port-reuse", "NODE_ADDR="+addr, "NODE_ROLE=worker2")
		case "WORKER1_SERVER2_CLOSED":
			close(done)
		default:
			t.Errorf("unexpected message %q", s)
		}
	}
	first, _ := nodeFork(t, func(w *Worker) {
		w1 = w
		w.OnMessage(onMessage)
		w.OnError(func(err error) { t.Errorf("worker 1: %v", err) })
	}, "node-port-reuse", "NODE_ADDR="+addr, "NODE_ROLE=worker1")
	select {
	case <-done:
	case <-first.Done():
		t.Fatalf("worker 1 exited with %v", first.exitStatus())
	case <-testContext(t).Done():
		t.Fatal("timed out")
	}
	// w2 was set before worker 1's last message, which closed done.
	first.Kill(nil)
	w2.Kill(nil)
	waitDone(t, first)
	waitDone(t, w2)
}
