//go:build unix

package clusternet

// Node's tests of Unix sockets, UDP and extra descriptors, which Node skips
// on Windows (and clusternet does not test there): test-cluster-http-pipe,
// -listen-pipe-readable-writable, -net-listen-relative-path, -eaccess,
// -fork-stdio, -dgram-1, -dgram-2, -child-index-dgram, -dgram-reuseport.

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func init() {
	helpers["node-http-pipe"] = func() {
		path := os.Getenv("NODE_PIPE")
		ln, err := Listen("unix", path)
		nodeCheck(err == nil, "Listen: %v", err)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Node: req.connection.remoteAddress and localAddress are
			// undefined on a pipe: no IP address on either side.
			_, _, err := net.SplitHostPort(r.RemoteAddr)
			nodeCheck(err != nil, "the request has a remote IP address: %q", r.RemoteAddr)
			if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
				_, isTCP := la.(*net.TCPAddr)
				nodeCheck(!isTCP, "the request has a local IP address: %v", la)
			}
			w.WriteHeader(200)
			io.WriteString(w, "OK")
		})}
		// ServeHTTP: the client's idle connection does not hold up the
		// Disconnect below.
		go ServeHTTP(srv, ln)
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}}
		resp, err := client.Get("http://pipe/")
		nodeCheck(err == nil, "GET: %v", err)
		b, err := io.ReadAll(resp.Body)
		nodeCheck(err == nil && resp.StatusCode == 200 && string(b) == "OK", "answer %d %q %v", resp.StatusCode, b, err)
		Self().Send("DONE")
		// Node exits at once (process.exit()); Send only queues (documented),
		// and exiting could drop the message: Disconnect sends it, then exits.
		Self().Disconnect()
		select {}
	}
	helpers["node-pipe-mode"] = func() {
		path := os.Getenv("NODE_PIPE")
		ln, err := Listen("unix", path)
		nodeCheck(err == nil, "Listen: %v", err)
		fi, err := os.Stat(path)
		nodeCheck(err == nil && fi.Mode().Perm() == 0o777, "socket file mode %v (%v), want 0777", fi.Mode(), err)
		ln.Close()
		Self().CloseChannel()
		select {}
	}
	helpers["node-relative-path"] = func() {
		nodeCheck(os.Chdir(os.Getenv("NODE_SOCKET_DIR")) == nil, "chdir")
		name := os.Getenv("NODE_SOCKET_NAME")
		_, err := Listen("unix", name)
		nodeCheck(err == nil, "Listen: %v", err)
		_, err = os.Stat(name)
		nodeCheck(err == nil, "the socket was not created in the working directory: %v", err)
		Self().CloseChannel()
		select {}
	}
	helpers["node-fork-stdio"] = func() {
		// Node's stdio[4], a pipe: the worker echoes what comes on it.
		f := os.NewFile(3, "extra")
		io.Copy(f, f)
		select {}
	}
	helpers["node-dgram-1"] = func() {
		pc, err := ListenPacket("udp4", "127.0.0.1:0")
		nodeCheck(err == nil, "ListenPacket: %v", err)
		buf := make([]byte, 64)
		received := 0
		for received < 10 {
			_, _, err := pc.ReadFrom(buf)
			nodeCheck(err == nil, "ReadFrom: %v", err)
			received++
		}
		Self().Send(map[string]int{"received": received})
		pc.Close()
		select {}
	}
	helpers["node-dgram-2"] = func() {
		pc, err := ListenPacket("udp4", "127.0.0.1:0")
		nodeCheck(err == nil, "ListenPacket: %v", err)
		Self().OnMessage(func(m Message) {
			var msg struct{ Port int }
			nodeCheck(m.Decode(&msg) == nil && msg.Port != 0, "message %s", m.Raw())
			to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: msg.Port}
			go func() {
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-Draining():
						return
					case <-tick.C:
						pc.WriteTo([]byte("hello world"), to)
					}
				}
			}()
		})
		select {}
	}
	helpers["node-child-index-dgram"] = func() {
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for range 2 {
					pc, err := ListenPacket("udp4", "127.0.0.1:0")
					nodeCheck(err == nil, "ListenPacket: %v", err)
					nodeCheck(pc.Close() == nil, "Close")
				}
			})
		}
		wg.Wait()
		os.Exit(0)
	}
}

// TestNodeHTTPPipe is test-cluster-http-pipe: a worker serves HTTP on a Unix
// socket and gets its own answer through it; the request has no IP address
// on either side; the worker says DONE and exits.
func TestNodeHTTPPipe(t *testing.T) {
	require(t, "unix")
	done := make(chan string, 1)
	w, _ := nodeFork(t, func(w *Worker) {
		w.OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			done <- s
		})
	}, "node-http-pipe", "NODE_PIPE="+lnSockPath(t))
	if s := recv(t, done, "DONE"); s != "DONE" {
		t.Errorf("the worker said %q", s)
	}
	nodeWantExit(t, w, 0)
}

// TestNodeListenPipeReadableWritable is
// test-cluster-listen-pipe-readable-writable: a socket file readable and
// writable by all has mode 0777.
//
// Go differs: Node's per-listen readableAll/writableAll are the primary's
// Settings.SocketMode here (documented: the primary creates the file).
func TestNodeListenPipeReadableWritable(t *testing.T) {
	require(t, "unix")
	s := CurrentSettings()
	s.SocketMode = 0o777
	withSettings(t, s)
	w, _ := nodeFork(t, nil, "node-pipe-mode", "NODE_PIPE="+lnSockPath(t))
	nodeWantExit(t, w, 0)
}

// TestNodeNetListenRelativePath is test-cluster-net-listen-relative-path: a
// worker that changes into a directory and listens on a relative socket
// name whose absolute path is longer than sun_path allows: the socket is
// created in its working directory, the worker exits with code 0, and the
// socket file is removed once it has.
func TestNodeNetListenRelativePath(t *testing.T) {
	require(t, "unix")
	const socketDir = "./unix-socket-dir"
	tmp := testTempDir(t)
	name := strings.Repeat("A", 101-len(socketDir))
	if p := filepath.Join(tmp, socketDir, name); len(p) <= 100 {
		t.Fatalf("absolute socket path %q is not longer than 100 bytes", p)
	}
	if err := os.Mkdir(filepath.Join(tmp, socketDir), 0o700); err != nil {
		t.Fatal(err)
	}
	s := CurrentSettings()
	s.Dir = tmp
	withSettings(t, s)
	w, _ := nodeFork(t, nil, "node-relative-path", "NODE_SOCKET_DIR="+socketDir, "NODE_SOCKET_NAME="+name)
	nodeWantExit(t, w, 0)
	if _, err := os.Stat(filepath.Join(tmp, socketDir, name)); err == nil {
		t.Error("the socket file is still there after the worker exited")
	}
}

// TestNodeEACCESS is test-cluster-eaccess: a worker listening on a socket
// path another process listens on gets EADDRINUSE. Node's other process is
// a child of the worker; here the primary itself, outside the cluster
// (net.Listen), holds the path.
func TestNodeEACCESS(t *testing.T) {
	require(t, "unix")
	path := lnSockPath(t)
	held, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	w, ev := nodeFork(t, nil, "node-listen-fail", "NODE_NET=unix", "NODE_ADDR="+path, "NODE_WANT=EADDRINUSE", "NODE_THEN=report")
	for {
		e := recv(t, ev, "the worker's report")
		if e.kind == "message" {
			var s string
			e.msg.Decode(&s)
			if s != "EADDRINUSE" {
				t.Errorf("the worker said %q", s)
			}
			break
		}
	}
	w.Disconnect()
	waitDone(t, w)
}

// TestNodeForkStdio is test-cluster-fork-stdio: an extra pipe given to the
// worker (Node's stdio[4]; Go's ExtraFiles, descriptor 3) carries data both
// ways; disconnected, the worker exits with code 0 and no signal.
func TestNodeForkStdio(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "theirs")
	defer mine.Close()
	s := CurrentSettings()
	s.ExtraFiles = []*os.File{theirs}
	withSettings(t, s)
	w, _ := nodeFork(t, nil, "node-fork-stdio")
	theirs.Close()
	mine.SetDeadline(time.Now().Add(testTimeout))
	if _, err := mine.Write([]byte("foobar")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(mine, buf); err != nil || string(buf) != "foobar" {
		t.Errorf("read back %q, %v; want foobar", buf, err)
	}
	w.Disconnect()
	nodeWantExit(t, w, 0)
}

// TestNodeDgram1 is test-cluster-dgram-1: four workers read from one UDP
// socket; the primary sends forty datagrams to the address of their
// listening events; each worker reads ten, reports, closes its socket and
// is disconnected; each exits having received ten.
func TestNodeDgram1(t *testing.T) {
	require(t, "udp")
	const workers, perWorker = 4, 10
	var mu sync.Mutex
	listening := 0
	var addr Address
	all := make(chan struct{})
	received := map[*Worker]int{}
	var ws []*Worker
	for range workers {
		w, _ := nodeFork(t, func(w *Worker) {
			w.OnListening(func(a Address) {
				mu.Lock()
				defer mu.Unlock()
				listening++
				addr = a
				if listening == workers {
					close(all)
				}
			})
			w.OnMessage(func(m Message) {
				var msg struct{ Received int }
				m.Decode(&msg)
				mu.Lock()
				received[w] = msg.Received
				mu.Unlock()
				w.Disconnect()
			})
		}, "node-dgram-1")
		ws = append(ws, w)
	}
	recv(t, all, "every worker listening")
	c, err := net.Dial("udp4", net.JoinHostPort(addr.Host, strconv.Itoa(addr.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range workers * perWorker {
		if _, err := c.Write([]byte("hello world")); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range ws {
		waitDone(t, w)
		mu.Lock()
		if received[w] != perWorker {
			t.Errorf("worker %d received %d, want %d", w.ID(), received[w], perWorker)
		}
		mu.Unlock()
	}
}

// TestNodeDgram2 is test-cluster-dgram-2: four workers, each with a UDP
// socket of the cluster, send datagrams to the primary's own socket until
// they are disconnected; the primary disconnects the cluster after forty.
func TestNodeDgram2(t *testing.T) {
	require(t, "udp")
	const workers, perWorker = 4, 10
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for range workers {
		w, _ := nodeFork(t, nil, "node-dgram-2")
		if err := w.Send(map[string]int{"port": pc.LocalAddr().(*net.UDPAddr).Port}); err != nil {
			t.Fatal(err)
		}
	}
	pc.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 64)
	for i := range workers * perWorker {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			t.Fatalf("after %d datagrams: %v", i, err)
		}
	}
	if err := Disconnect(testContext(t)); err != nil {
		t.Errorf("Disconnect: %v", err)
	}
}

// TestNodeChildIndexDgram is test-cluster-child-index-dgram: in one worker,
// two at a time, bind UDP port 0, close, bind port 0 again, close: every
// bind succeeds and the worker exits with code 0.
func TestNodeChildIndexDgram(t *testing.T) {
	require(t, "udp")
	w, _ := nodeFork(t, nil, "node-child-index-dgram")
	nodeWantExit(t, w, 0)
}

// TestNodeDgramReuseport is test-cluster-dgram-reuseport: with reusePort,
// two UDP sockets of one worker bind the same port; both close; the worker
// disconnects and exits with code 0. As for TCP (TestNodeNetReuseport), the
// primary binds them (documented), where Node's worker does.
func TestNodeDgramReuseport(t *testing.T) {
	require(t, "udp")
	require(t, "reuseport")
	w, _ := nodeFork(t, nil, "node-reuseport", "NODE_UDP=1")
	nodeWantExit(t, w, 0)
}

func init() {
	helpers["node-dgram-close-in-listening"] = func() {
		pc, err := ListenPacket("udp4", "127.0.0.1:0")
		nodeCheck(err == nil, "ListenPacket: %v", err)
		nodeCheck(pc.Close() == nil, "Close")
		Self().Disconnect()
		select {}
	}
}

// TestNodeDgramClusterCloseInListening is
// test-dgram-cluster-close-in-listening: three workers each close their UDP
// socket as soon as it is bound, then disconnect: no error, every worker
// exits with code 0.
func TestNodeDgramClusterCloseInListening(t *testing.T) {
	require(t, "udp")
	var ws []*Worker
	for range 3 {
		w, _ := nodeFork(t, nil, "node-dgram-close-in-listening")
		ws = append(ws, w)
	}
	for _, w := range ws {
		nodeWantExit(t, w, 0)
	}
}
