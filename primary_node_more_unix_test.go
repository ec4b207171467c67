//go:build unix

package clusternet

// Node workers on UDP, Unix sockets and port 0, shared as Node's own
// primary shares them, and the sockets the primary sends a Node worker
// with a message.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNodeJSUDP: two Node workers bind one UDP port (dgram, shared as
// Node shares it); datagrams are answered.
func TestNodeJSUDP(t *testing.T) {
	for _, port := range []string{"fixed", "0"} {
		t.Run("port="+port, func(t *testing.T) {
			p := "0"
			if port == "fixed" {
				pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				_, p, _ = net.SplitHostPort(pc.LocalAddr().String())
				pc.Close()
			}
			var addrs []string
			for range 2 {
				w := forkJS(t, "udp.js", "PORT="+p, "HOST=127.0.0.1")
				ev := watchJS(w)
				ev.next(t, "online")
				a := ev.next(t, "listening ")
				addrs = append(addrs, strings.TrimPrefix(a, "listening "))
				defer ev.noErrors(t)
			}
			if addrs[0] != addrs[1] || strings.HasSuffix(addrs[0], ":0") {
				t.Fatalf("the workers listen on %v, want one address", addrs)
			}
			c, err := net.Dial("udp4", addrs[0])
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			b := make([]byte, 64)
			for range 5 {
				c.Write([]byte("ping"))
				c.SetReadDeadline(time.Now().Add(testTimeout))
				n, err := c.Read(b)
				if err != nil || !strings.HasPrefix(string(b[:n]), "node ") {
					t.Fatalf("read %q, %v", b[:n], err)
				}
			}
		})
	}
}

// TestNodeJSUnixSocket: two Node workers listen on one Unix socket path
// under each policy; HTTP over it is answered.
func TestNodeJSUnixSocket(t *testing.T) {
	for _, p := range []Policy{SchedRR, SchedNone} {
		t.Run(p.String(), func(t *testing.T) {
			setPolicy(t, p)
			path := filepath.Join(t.TempDir(), "s.sock")
			for range 2 {
				w := forkJS(t, "whoami.js", "SOCKET="+path)
				ev := watchJS(w)
				ev.next(t, "online")
				ev.next(t, "listening "+path)
				defer ev.noErrors(t)
			}
			c := &http.Client{Timeout: testTimeout, Transport: &http.Transport{
				DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", path)
				},
			}}
			seen := map[string]bool{}
			for range 10 {
				body, err := get(c, "http://unix/")
				if err != nil || !strings.HasPrefix(body, "node ") {
					t.Fatalf("got %q, %v", body, err)
				}
				seen[body] = true
			}
			t.Logf("answered by %d workers", len(seen))
			if err := Disconnect(testContext(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNodeJSPortZero: two Node workers listen on port 0 under each policy
// and share one port, as Node's cluster does.
func TestNodeJSPortZero(t *testing.T) {
	for _, p := range []Policy{SchedRR, SchedNone} {
		t.Run(p.String(), func(t *testing.T) {
			setPolicy(t, p)
			var addrs []string
			for range 2 {
				w := forkJS(t, "whoami.js", "PORT=0", "HOST=127.0.0.1")
				ev := watchJS(w)
				ev.next(t, "online")
				addrs = append(addrs, strings.TrimPrefix(ev.next(t, "listening "), "listening "))
				defer ev.noErrors(t)
			}
			if addrs[0] != addrs[1] || strings.HasSuffix(addrs[0], ":0") {
				t.Fatalf("the workers listen on %v, want one port", addrs)
			}
			if got := jsGet(t, "http://"+addrs[0]+"/"); !strings.HasPrefix(got, "node ") {
				t.Errorf("got %q", got)
			}
			if err := Disconnect(testContext(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNodeJSSendHandles: a connection, a listener and a UDP socket sent
// with a message arrive in Node as a net.Socket, a net.Server and a
// dgram.Socket, and work there.
func TestNodeJSSendHandles(t *testing.T) {
	w := forkJS(t, "handles.js")
	ev := watchJS(w)
	in := messages(w)
	ev.next(t, "online")
	defer ev.noErrors(t)

	// A connection: the worker answers on it and ends it.
	ln, client, server := loopbackConn(t, "tcp4")
	if err := w.Send("a conn", WithHandle(server)); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(testTimeout))
	line, err := bufio.NewReader(client).ReadString('\n')
	if want := fmt.Sprintf("node %d got a conn\n", w.ID()); line != want || err != nil {
		t.Errorf("read %q, %v; want %q", line, err, want)
	}

	// A UDP socket: the worker answers datagrams.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := w.Send("a socket", WithHandle(pc)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, in, "serving"); string(m.Raw()) != `"serving"` {
		t.Fatalf("worker says %s", m.Raw())
	}
	u, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("ping"))
	b := make([]byte, 64)
	u.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := u.Read(b)
	if want := fmt.Sprintf("node %d a socket ping", w.ID()); string(b[:n]) != want || err != nil {
		t.Errorf("read %q, %v; want %q", b[:n], err, want)
	}

	// A listener: the worker serves it. Node before 20 cannot listen on a
	// server handle in a cluster worker (its net.Server asks the primary
	// for address null, port -1: Node's own primary then throws
	// ERR_INVALID_ARG_VALUE and dies); under this primary the worker gets
	// EINVAL, and dies of the unhandled error, while the primary goes on.
	if jsNodeMajor(t) < 20 {
		if err := w.Send("a server", WithHandle(ln)); err != nil {
			t.Fatal(err)
		}
		ev.next(t, "disconnect")
		ev.next(t, "exit exit code 1")
		return
	}
	if err := w.Send("a server", WithHandle(ln)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, in, "serving"); string(m.Raw()) != `"serving"` {
		t.Fatalf("worker says %s", m.Raw())
	}
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	line, err = bufio.NewReader(c).ReadString('\n')
	if want := fmt.Sprintf("node %d serves a server\n", w.ID()); line != want || err != nil {
		t.Errorf("read %q, %v; want %q", line, err, want)
	}
}

// TestNodeJSWorkerLeaves: a Node worker that disconnects itself
// (cluster.worker.disconnect(), which waits for the primary's answer to
// exitedAfterDisconnect) or kills itself (cluster.worker.kill()) leaves on
// purpose: ExitedAfterDisconnect, exit code 0.
func TestNodeJSWorkerLeaves(t *testing.T) {
	for _, how := range []string{"leave", "die"} {
		t.Run(how, func(t *testing.T) {
			w := forkJS(t, "handles.js")
			ev := watchJS(w)
			ev.next(t, "online")
			if err := w.Send(how); err != nil {
				t.Fatal(err)
			}
			ev.next(t, "disconnect")
			ev.next(t, "exit exit code 0")
			if !w.ExitedAfterDisconnect() {
				t.Error("ExitedAfterDisconnect is false")
			}
			ev.noErrors(t)
		})
	}
}

// TestNodeJSWindowLargeMessages: with connections pipelined to Node workers
// (NodeWindow 8), large messages to the same workers do not make Node's
// reader attach a connection to the wrong line: every request is answered,
// every message arrives, no error.
func TestNodeJSWindowLargeMessages(t *testing.T) {
	setPolicy(t, SchedRR)
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	s := jsSettings(t, "whoami.js")
	s.NodeWindow = 8
	var ws []*Worker
	var ins []<-chan Message
	for range 2 {
		w := forkJSWith(t, s, "PORT="+port, "HOST=127.0.0.1")
		ev := watchJS(w)
		ins = append(ins, messages(w))
		ev.next(t, "online")
		ev.next(t, "listening")
		defer ev.noErrors(t)
		ws = append(ws, w)
	}
	// Sizes around Node's 64 KiB read, so that some read ends in the
	// middle of the connection line that follows a message.
	const msgs = 40
	size := func(j int) int { return 64<<10 - 300 + 17*j }
	done := make(chan map[string]int, 1)
	go func() { done <- jsServed(t, addr, 300, true) }()
	for j := range msgs {
		for _, w := range ws {
			if err := w.Send(strings.Repeat("y", size(j)-2)); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := recv(t, done, "the requests")
	n := 0
	for _, c := range got {
		n += c
	}
	if n != 300 {
		t.Errorf("answers %v, want 300", got)
	}
	for i, in := range ins {
		for j := range msgs {
			m := recv(t, in, "a message's size")
			if want := fmt.Sprint(size(j) - 2); string(m.Raw()) != want {
				t.Fatalf("worker %d: reply %s, want %s", ws[i].ID(), m.Raw(), want)
			}
		}
	}
}

// TestNodeJSWorkerSendsSockets: a Node worker sends the primary the
// connections its server accepts; the primary serves them; the worker's
// server.getConnections() and server.close(), which ask the primary about
// them, are answered.
func TestNodeJSWorkerSendsSockets(t *testing.T) {
	setPolicy(t, SchedRR)
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	w := forkJS(t, "sendsock.js", "PORT="+port, "HOST=127.0.0.1")
	ev := watchJS(w)
	conns := make(chan net.Conn, 1)
	w.OnMessage(func(m Message) {
		if m.HasHandle() { // the handle is the handler's to take
			c, err := m.Conn()
			if err != nil {
				t.Errorf("the connection sent with %s: %v", m.Raw(), err)
				return
			}
			conns <- c
		}
	})
	in := messages(w)
	ev.next(t, "online")
	ev.next(t, "listening")
	defer ev.noErrors(t)

	client, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	m := recv(t, in, "the connection")
	if want := fmt.Sprintf(`"conn for node %d"`, w.ID()); string(m.Raw()) != want {
		t.Fatalf("message %s, want %s", m.Raw(), want)
	}
	c := recv(t, conns, "the connection's handle")
	fmt.Fprintln(c, "served by the Go primary")
	c.Close()
	client.SetReadDeadline(time.Now().Add(testTimeout))
	if line, err := bufio.NewReader(client).ReadString('\n'); line != "served by the Go primary\n" || err != nil {
		t.Errorf("read %q, %v", line, err)
	}

	if m := ask[map[string]any](t, w, in, "count"); m["count"] != float64(0) || m["err"] != nil {
		t.Errorf("getConnections: %v", m)
	}
	if m := ask[string](t, w, in, "close"); m != "closed" {
		t.Errorf("close: %q", m)
	}
}
