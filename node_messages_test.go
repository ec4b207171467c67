package clusternet

// Node's tests of messages and the handles they carry: test-cluster-message,
// -net-send, -send-handle-twice, -send-deadlock,
// -send-socket-to-worker-http-server, -invalid-message,
// -advanced-serialization, test/sequential/test-cluster-send-handle-large-payload.

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// nodeLargePayload is test-cluster-send-handle-large-payload's payload.
var nodeLargePayload = strings.Repeat("a", 800004)

// nodeAdvanced holds what JSON loses and gob keeps.
type nodeAdvanced struct {
	Inf, NaN float64
	Max      uint64
	ByInt    map[int]string
	Raw      []byte
	Ptr      *nodeAdvanced
}

func init() {
	helpers["node-message"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		var mu sync.Mutex
		var sock net.Conn
		var message *string
		maybeReply := func() {
			if sock == nil || message == nil {
				return
			}
			b, _ := json.Marshal(map[string]string{"code": "received message", "echo": *message})
			sock.Write(b)
		}
		Self().OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			mu.Lock()
			defer mu.Unlock()
			message = &s
			maybeReply()
		})
		for {
			c, err := ln.Accept()
			if err != nil {
				select {}
			}
			mu.Lock()
			sock = c
			maybeReply()
			mu.Unlock()
			Self().Send("message from worker")
		}
	}
	// The child of test-cluster-net-send: it sends the primary its end of
	// a connection to itself, and writes "hello" on the other end once the
	// primary says "got".
	helpers["node-net-send"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		got := make(chan struct{})
		Self().OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			nodeCheck(s == "got", "message %q, want \"got\"", s)
			close(got)
		})
		client, err := net.Dial("tcp", ln.Addr().String())
		nodeCheck(err == nil, "Dial: %v", err)
		c, err := ln.Accept()
		nodeCheck(err == nil, "Accept: %v", err)
		nodeCheck(Self().Send("handle", WithHandle(client)) == nil, "Send")
		<-got
		io.WriteString(c, "hello")
		c.Close()
		select {}
	}
	helpers["node-send-handle-twice"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		nodeCheck(err == nil, "Listen: %v", err)
		client, err := net.Dial("tcp", ln.Addr().String())
		nodeCheck(err == nil, "Dial: %v", err)
		c, err := ln.Accept()
		nodeCheck(err == nil, "Accept: %v", err)
		// Node checks neither send; the second is of a socket the first
		// closed (no keepOpen), and must not hurt the worker.
		Self().Send("send-handle-1", WithHandle(c))
		Self().Send("send-handle-2", WithHandle(c))
		client.Close()
		Self().Disconnect()
		select {}
	}
	helpers["node-send-deadlock"] = func() {
		Self().OnMessage(func(m Message) {
			var msg struct {
				Message string `json:"message"`
				Port    int    `json:"port"`
			}
			if m.HasHandle() {
				h, err := m.Conn()
				nodeCheck(err == nil, "the handle: %v", err)
				if err := Self().Send("reply", WithHandle(h)); err != nil && !errors.Is(err, ErrChannelClosed) {
					nodeCheck(false, "Send: %v", err)
				}
				return
			}
			nodeCheck(m.Decode(&msg) == nil && msg.Message == "listen" && msg.Port != 0, "message %s", m.Raw())
			go func() {
				addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(msg.Port))
				c1, err := net.Dial("tcp", addr)
				nodeCheck(err == nil, "Dial: %v", err)
				c2, err := net.Dial("tcp", addr)
				nodeCheck(err == nil, "Dial: %v", err)
				c1.Close()
				c2.Close()
				Self().Disconnect()
			}()
		})
		select {}
	}
	helpers["node-socket-to-http"] = func() {
		var srv *http.Server
		var ln *nodeOneConn
		srv = &http.Server{
			Handler: http.NotFoundHandler(),
			ConnState: func(c net.Conn, st http.ConnState) {
				if st != http.StateNew {
					return
				}
				// socket.server === server: the connection the server
				// got is the one handed over, through that server.
				nodeCheck(c == ln.c, "the server's connection is not the one received")
				c.Close()
				Self().Disconnect()
			},
		}
		Self().OnMessage(func(m Message) {
			c, err := m.Conn()
			nodeCheck(err == nil, "the handle: %v", err)
			ln = &nodeOneConn{c: c, ch: make(chan net.Conn, 1)}
			ln.ch <- c
			go srv.Serve(ln)
		})
		select {}
	}
	helpers["node-large-payload"] = func() {
		Self().OnMessage(func(m Message) {
			var msg struct{ Payload string }
			nodeCheck(m.Decode(&msg) == nil && msg.Payload == nodeLargePayload, "the payload differs")
			c, err := m.Conn()
			nodeCheck(err == nil, "the handle: %v", err)
			nodeCheck(Self().Send(map[string]string{"payload": nodeLargePayload}, WithHandle(c)) == nil, "Send")
		})
		select {}
	}
	helpers["node-advanced"] = func() {
		Self().OnMessage(func(m Message) {
			var v nodeAdvanced
			nodeCheck(m.Decode(&v) == nil, "decode")
			Self().Send(v)
		})
		select {}
	}
}

// nodeOneConn is a listener that hands out one connection, then blocks
// until closed: a server that gets a socket from elsewhere (Node's
// server.emit('connection', socket)).
type nodeOneConn struct {
	c  net.Conn
	ch chan net.Conn
}

func (l *nodeOneConn) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	default:
	}
	select {}
}
func (l *nodeOneConn) Close() error   { return nil }
func (l *nodeOneConn) Addr() net.Addr { return l.c.LocalAddr() }

// TestNodeMessage is test-cluster-message: the worker's message reaches the
// worker's message handler and the primary-wide one (with the worker); the
// primary's message reaches the worker, which echoes it on a connection.
func TestNodeMessage(t *testing.T) {
	own := make(chan string, 4)
	var once sync.Once
	port := make(chan int, 1)
	w, ev := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			own <- s
		})
		w.OnListening(func(a Address) { once.Do(func() { port <- a.Port }) })
	}, "node-message")
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(recv(t, port, "listening"))), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := w.Send("message from primary"); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	var reply struct{ Code, Echo string }
	if err := json.NewDecoder(c).Decode(&reply); err != nil || reply.Code != "received message" || reply.Echo != "message from primary" {
		t.Errorf("the worker wrote %+v (%v), want the primary's message echoed", reply, err)
	}
	if s := recv(t, own, "the worker's message"); s != "message from worker" {
		t.Errorf("the worker's message handler got %q", s)
	}
	for {
		e := recv(t, ev, "the primary-wide message event")
		if e.kind == "message" {
			var s string
			if e.msg.Decode(&s); s != "message from worker" {
				t.Errorf("the primary-wide message handler got %q", s)
			}
			break
		}
	}
	w.Kill(nil)
	waitDone(t, w)
}

// TestNodeNetSend is test-cluster-net-send: a worker sends the primary a
// connection with a message; the primary gets both, answers, and reads
// "hello" and the end from the connection.
//
// Node's file sends from a plain child process (child_process.fork); the
// port sends from a cluster worker, the same channel.
func TestNodeNetSend(t *testing.T) {
	handle := make(chan net.Conn, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			c, err := m.Conn()
			if s != "handle" || err != nil {
				t.Errorf("message %q, handle %v; want \"handle\" and a connection", s, err)
				return
			}
			w.Send("got")
			handle <- c
		})
	}, "node-net-send")
	c := recv(t, handle, "the handle")
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Errorf("read %q, %v from the handle; want \"hello\" then the end", b, err)
	}
	w.Kill(nil)
	waitDone(t, w)
}

// TestNodeSendHandleTwice is test-cluster-send-handle-twice: a worker that
// sends one connection twice exits with code 0 and no signal.
func TestNodeSendHandleTwice(t *testing.T) {
	w, _ := nodeFork(t, nil, "node-send-handle-twice")
	nodeWantExit(t, w, 0)
}

// TestNodeSendDeadlock is test-cluster-send-deadlock: the primary sends the
// worker every connection its server gets, the worker sends each back,
// while the worker connects twice to that server: no deadlock, the worker
// disconnects and exits with code 0 and no signal.
func TestNodeSendDeadlock(t *testing.T) {
	srv := nodeHeld(t)
	w, _ := nodeFork(t, nil, "node-send-deadlock")
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			w.Send("handle", WithHandle(c))
		}
	}()
	if err := w.Send(map[string]any{"message": "listen", "port": srv.Addr().(*net.TCPAddr).Port}); err != nil {
		t.Fatal(err)
	}
	nodeWantExit(t, w, 0)
}

// TestNodeSendSocketToWorkerHTTPServer is
// test-cluster-send-socket-to-worker-http-server: a connection the primary
// sends is served by the worker's HTTP server, whose connection it is; the
// worker then disconnects and exits with code 0.
func TestNodeSendSocketToWorkerHTTPServer(t *testing.T) {
	srv := nodeHeld(t)
	w, _ := nodeFork(t, nil, "node-socket-to-http")
	client, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := srv.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send("socket", WithHandle(c)); err != nil {
		t.Fatal(err)
	}
	nodeWantExit(t, w, 0)
}

// TestNodeSendHandleLargePayload is
// test/sequential/test-cluster-send-handle-large-payload: an 800004-byte
// message with a connection goes to the worker and back, both intact.
func TestNodeSendHandleLargePayload(t *testing.T) {
	srv := nodeHeld(t)
	type answer struct {
		m    Message
		c    net.Conn
		cErr error
	}
	back := make(chan answer, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(m Message) {
			c, err := m.Conn() // taken in the handler: an untaken handle is closed after it
			back <- answer{m, c, err}
		})
	}, "node-large-payload")
	client, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if c, err := srv.Accept(); err == nil {
		defer c.Close()
	}
	if err := w.Send(map[string]string{"payload": nodeLargePayload}, WithHandle(client)); err != nil {
		t.Fatal(err)
	}
	a := recv(t, back, "the worker's answer")
	var msg struct{ Payload string }
	if err := a.m.Decode(&msg); err != nil || msg.Payload != nodeLargePayload {
		t.Errorf("the payload came back different (%d bytes, %v)", len(msg.Payload), err)
	}
	if a.cErr != nil {
		t.Errorf("the handle: %v", a.cErr)
	} else {
		a.c.Close()
	}
	w.Kill(nil)
	waitDone(t, w)
}

// TestNodeInvalidMessage is test-cluster-invalid-message: a message that
// looks like one of the cluster's own ({cmd: 'NODE_CLUSTER', ack: -1})
// does not upset the worker: disconnected afterwards, it exits with code 0
// and no signal.
func TestNodeInvalidMessage(t *testing.T) {
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() {
			if err := w.Send(map[string]any{"cmd": "NODE_CLUSTER", "ack": -1}); err != nil {
				t.Errorf("Send: %v", err)
			}
			w.Disconnect()
		})
	}, "idle")
	nodeWantExit(t, w, 0)
}

// TestNodeAdvancedSerialization is test-cluster-advanced-serialization:
// with the advanced serialization (Gob), a value JSON cannot carry comes
// back from the worker deeply equal.
//
// Go differs: Node's value is a circular object, which V8's serializer
// keeps; gob cannot encode a cycle (nor can anything in Go's standard
// library). What "advanced" means in Go is the Go types JSON loses
// (documented): infinities and NaN, full uint64, int map keys, nested
// pointers; the test sends those.
func TestNodeAdvancedSerialization(t *testing.T) {
	withSettings(t, Settings{Serialization: Gob})
	want := nodeAdvanced{Inf: math.Inf(1), NaN: math.NaN(), Max: math.MaxUint64,
		ByInt: map[int]string{-1: "a", 7: "b"}, Raw: []byte{0, 255}, Ptr: &nodeAdvanced{Max: 1}}
	back := make(chan Message, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() {
			if err := w.Send(want); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
		w.OnMessage(func(m Message) { back <- m })
	}, "node-advanced")
	var got nodeAdvanced
	if err := recv(t, back, "the echo").Decode(&got); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(got.NaN) {
		t.Errorf("NaN came back as %v", got.NaN)
	}
	got.NaN, want.NaN = 0, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got back %+v, want %+v", got, want)
	}
	w.Kill(nil)
	waitDone(t, w)
}

func init() {
	helpers["node-listen-handle"] = func() {
		Self().OnMessage(func(m Message) {
			ln, err := m.Listener()
			nodeCheck(err == nil, "the handle is not a listener: %v", err)
			ln.Close()
			os.Exit(0)
		})
		select {}
	}
}

// TestNodeNetListenHandleInCluster1 is test-net-listen-handle-in-cluster-1:
// a listening server the primary sends once the worker is online reaches
// the worker as a server (Go: m.Listener()); the worker exits with code 0.
func TestNodeNetListenHandleInCluster1(t *testing.T) {
	srv := nodeHeld(t)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnOnline(func() {
			if err := w.Send(nil, WithHandle(srv)); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}, "node-listen-handle")
	nodeWantExit(t, w, 0)
}
