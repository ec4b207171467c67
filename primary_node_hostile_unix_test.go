//go:build unix

package clusternet

// Bad input from a Node worker: the worker here is the test binary playing
// a Node worker on Node's channel (jsFakeNode), so that it can write what
// Node never would. Each kind of bad input is an error event; none stops the
// primary, and only a line past the size limit closes the channel.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// envFakeNode names what jsFakeNode does; its variables do not start with
// CLUSTERNET_, which a Node worker's environment leaves out.
const envFakeNode = "JSFAKE_ROLE"

func init() {
	if role := os.Getenv(envFakeNode); role != "" && os.Getenv(envNodeUniqueID) != "" {
		os.Exit(jsFakeNode(role))
	}
}

// jsFakeNode is a Node worker written in Go: it reports online as Node
// does, writes the bad input of role, then reads the channel until the
// primary closes it. It returns its exit code.
func jsFakeNode(role string) int {
	fd, err := strconv.Atoi(os.Getenv(envNodeChannelFD))
	if err != nil || os.Getenv(envNodeSerialization) != "json" {
		fmt.Fprintln(os.Stderr, "fake node: no channel")
		return 3
	}
	write := func(s string, fds ...int) {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if err := unix.Sendmsg(fd, []byte(s), oob, nil, 0); err != nil {
			fmt.Fprintln(os.Stderr, "fake node: write:", err)
			os.Exit(3)
		}
	}
	var got []string // lines from the primary
	b := make([]byte, 64<<10)
	read := func() bool {
		n, err := unix.Read(fd, b)
		if n <= 0 || err != nil {
			return false
		}
		got = append(got, strings.Split(strings.TrimSpace(string(b[:n])), "\n")...)
		return true
	}
	// handle writes a NODE_HANDLE line and waits for its answer, as Node does.
	handle := func(s string, fds ...int) {
		write(s, fds...)
		for n := len(got); ; {
			for _, l := range got[n:] {
				if strings.Contains(l, "NODE_HANDLE_") {
					return
				}
			}
			n = len(got)
			if !read() {
				return
			}
		}
	}
	write(`{"cmd":"NODE_CLUSTER","act":"online","seq":0}` + "\n")
	switch role {
	case "bad":
		pair, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		write("{not json\n")
		write(`{"cmd":"NODE_WHATEVER"}` + "\n")
		write(`{"cmd":"NODE_CLUSTER","act":"fly","seq":1}` + "\n")
		write(`{"cmd":"NODE_CLUSTER","act":"online","seq":2}` + "\n")
		write(`{"cmd":"NODE_HANDLE_ACK"}` + "\n")
		handle(`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":"no handle came"}` + "\n")
		handle(`{"cmd":"NODE_HANDLE","type":"fs.File","msg":"a type nobody sends"}`+"\n", pair[0])
		handle(`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"NODE_CLUSTER"}}`+"\n", pair[0])
		handle(`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"with":"a socket"}}`+"\n", pair[0])
		write(`"a handle no line claims"`+"\n", pair[1])
		unix.Close(pair[0])
		unix.Close(pair[1])
		write(`"ok"` + "\n")
	case "deaf":
		// Reads, never answers a handle.
		for read() {
		}
		return 0
	case "long":
		write(`"` + strings.Repeat("x", 4<<10)) // no end
	}
	for read() {
	}
	if role == "bad" {
		// The answers to the four NODE_HANDLE lines, in order.
		want := []string{nodeCmdHandleNak, nodeCmdHandleAck, nodeCmdHandleAck, nodeCmdHandleAck}
		var answers []string
		for _, l := range got {
			if strings.Contains(l, "NODE_HANDLE_") {
				answers = append(answers, strings.TrimSuffix(strings.TrimPrefix(l, `{"cmd":"`), `"}`))
			}
		}
		if fmt.Sprint(answers) != fmt.Sprint(want) {
			fmt.Fprintf(os.Stderr, "fake node: answers %v, want %v\n", answers, want)
			return 4
		}
	}
	return 0
}

// TestNodeJSBadInput: malformed JSON, unknown commands and acts, a second
// online, an answer to nothing, NODE_HANDLE lines without a handle, with
// an unknown type or an internal message, a handle no line claims: each an
// error event, the channel stays up, the valid messages (one with a
// socket) arrive, nothing leaks.
func TestNodeJSBadInput(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	w := forkJSWith(t, Settings{Exec: exe, Args: []string{"-test.run=^$"}, NodeIPC: true}, envFakeNode+"=bad")
	ev := watchJS(w)
	conns := make(chan string, 4)
	w.OnMessage(func(m Message) {
		if m.HasHandle() { // the handle is the handler's to take
			c, err := m.Conn()
			if err != nil {
				t.Errorf("the socket sent with %s: %v", m.Raw(), err)
				return
			}
			conns <- fmt.Sprintf("%s %T", m.Raw(), c)
			c.Close()
		}
	})
	in := messages(w)
	ev.next(t, "online")
	var got []string
	for len(got) < 3 {
		m := recv(t, in, "a message")
		got = append(got, string(m.Raw()))
	}
	if c := recv(t, conns, "the socket"); c != `{"with":"a socket"} *net.UnixConn` {
		t.Errorf("the socket came as %s", c)
	}
	if fmt.Sprint(got) != `[{"with":"a socket"} "a handle no line claims" "ok"]` {
		t.Errorf("messages %v", got)
	}
	if !w.IsConnected() {
		t.Error("the bad input closed the channel")
	}
	w.CloseChannel()
	ev.next(t, "disconnect")
	ev.next(t, "exit exit code 0")
	wants := []string{"not valid json", "NODE_WHATEVER", `"fly"`, "online twice", "an answer (NODE_HANDLE_ACK) to no handle",
		"came without a handle", `type "fs.File"`, `internal message "NODE_CLUSTER"`, "handle(s) that no NODE_HANDLE line claimed"}
	errs := fmt.Sprint(ev.errors())
	for _, want := range wants {
		if !strings.Contains(errs, want) {
			t.Errorf("no error event says %q; the events: %s", want, errs)
		}
	}
	fdsAtMost(t, fds, "after the worker")
}

// TestNodeJSLongLine: a line past Settings.MaxMessageSize closes the
// channel, with an error event; the worker exits as a Node worker whose
// channel closed does.
func TestNodeJSLongLine(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := forkJSWith(t, Settings{Exec: exe, Args: []string{"-test.run=^$"}, NodeIPC: true, MaxMessageSize: 1 << 10}, envFakeNode+"=long")
	ev := watchJS(w)
	ev.next(t, "online")
	ev.next(t, "disconnect")
	ev.next(t, "exit exit code 0")
	if errs := fmt.Sprint(ev.errors()); !strings.Contains(errs, "line longer than the limit of 1024 bytes") {
		t.Errorf("error events %s", errs)
	}
}

// TestNodeJSDeafWorker: a worker that never answers the handle sent to it
// holds back everything sent after it; past the channel's limit it is
// disconnected, with an error event, as a Go worker that does not read is.
func TestNodeJSDeafWorker(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := forkJSWith(t, Settings{Exec: exe, Args: []string{"-test.run=^$"}, NodeIPC: true, MaxMessageSize: 1 << 20}, envFakeNode+"=deaf")
	ev := watchJS(w)
	ev.next(t, "online")
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := w.Send("a socket", WithHandle(pc)); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 1<<20-2)
	for i := 0; ; i++ {
		err := w.Send(big)
		if errors.Is(err, ErrChannelClosed) {
			t.Logf("refused after %d MiB", i)
			break
		}
		if err != nil || i > 32 {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	ev.next(t, "disconnect")
	ev.next(t, "exit exit code 0")
	if errs := fmt.Sprint(ev.errors()); !strings.Contains(errs, "does not answer the handle") {
		t.Errorf("error events %s", errs)
	}
}
