//go:build unix

package clusternet

// Node.js workers under the Go primary (Settings.NodeIPC, primary_node.go):
// Node's own documentation examples (testdata/node/) run as workers. The
// tests need node; they skip without it, except under CI (CI=true), where a
// missing node fails them (.ci/run installs it).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// jsNode returns the node program, or skips t without it (fails t under CI).
func jsNode(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node is not installed; .ci/run installs it (apt-get install nodejs)")
		}
		t.Skip("node is not installed (apt-get install nodejs)")
	}
	return p
}

// jsNodeMajor returns the major version of the node program.
func jsNodeMajor(t testing.TB) int {
	t.Helper()
	out, err := exec.Command(jsNode(t), "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		t.Fatalf("node --version says %q", out)
	}
	return n
}

// jsSettings returns settings that fork script (in testdata/node) as a
// Node worker.
func jsSettings(t testing.TB, script string, args ...string) Settings {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("testdata", "node", script))
	if err != nil {
		t.Fatal(err)
	}
	return Settings{Exec: jsNode(t), Args: append([]string{abs}, args...), NodeIPC: true}
}

// forkJSWith forks a Node worker with s (the settings are the cluster's
// for the fork only) and makes sure it is gone when the test ends.
func forkJSWith(t testing.TB, s Settings, env ...string) *Worker {
	t.Helper()
	old := CurrentSettings()
	if err := SetupPrimary(s); err != nil {
		t.Fatalf("SetupPrimary: %v", err)
	}
	w, err := Fork(env...)
	if rerr := SetupPrimary(old); rerr != nil {
		t.Errorf("restoring the settings: %v", rerr)
	}
	if err != nil {
		t.Fatalf("Fork: %v", err)
	}
	t.Cleanup(func() { reap(t, w) })
	return w
}

// forkJS forks script as a Node worker.
func forkJS(t testing.TB, script string, env ...string) *Worker {
	t.Helper()
	return forkJSWith(t, jsSettings(t, script), env...)
}

// jsEvents records a worker's events, in order, as strings, and its
// errors.
type jsEvents struct {
	ch   chan string
	mu   sync.Mutex
	errs []error
}

func watchJS(w *Worker) *jsEvents {
	ev := &jsEvents{ch: make(chan string, 64)}
	w.OnOnline(func() { ev.ch <- "online " + w.State().String() })
	w.OnListening(func(a Address) { ev.ch <- "listening " + a.String() })
	w.OnDisconnect(func() { ev.ch <- "disconnect" })
	w.OnExit(func(st ExitStatus) { ev.ch <- "exit " + st.String() })
	w.OnError(func(err error) {
		ev.mu.Lock()
		ev.errs = append(ev.errs, err)
		ev.mu.Unlock()
	})
	return ev
}

// next waits for the next event, which must start with want.
func (ev *jsEvents) next(t testing.TB, want string) string {
	t.Helper()
	got := recv(t, ev.ch, "the event "+want)
	if !strings.HasPrefix(got, want) {
		t.Fatalf("event %q, want %q", got, want)
	}
	return got
}

func (ev *jsEvents) errors() []error {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]error(nil), ev.errs...)
}

// noErrors fails t if the worker reported errors.
func (ev *jsEvents) noErrors(t testing.TB) {
	t.Helper()
	for _, err := range ev.errors() {
		t.Errorf("error event: %v", err)
	}
}

// jsGet fetches url and returns its body, retrying while nothing listens
// yet (a worker listening is reported before its first accept).
func jsGet(t testing.TB, url string) string {
	t.Helper()
	c := &http.Client{Timeout: testTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(b)
}

// TestNodeJSEcho is the worker.send() example: the primary sends strings,
// numbers and objects, the Node worker sends each back; then a graceful
// disconnect, with the events in Node's order and the worker's state after
// each.
func TestNodeJSEcho(t *testing.T) {
	w := forkJS(t, "echo.js")
	ev := watchJS(w)
	in := messages(w)
	ev.next(t, "online online")
	if !w.IsConnected() || w.IsDead() {
		t.Fatalf("online worker: IsConnected %v IsDead %v", w.IsConnected(), w.IsDead())
	}
	echo(t, w, in, "hi there")
	echo(t, w, in, 42.5)
	type obj struct {
		Cmd string `json:"cmd"`
		N   int    `json:"n"`
	}
	echo(t, w, in, obj{Cmd: "notifyRequest", N: 7})
	echo(t, w, in, strings.Repeat("x", 200<<10)) // past Node's 64 KiB reads
	if err := w.Send(map[string]string{"cmd": "NODE_CLUSTER"}); err == nil {
		t.Error("Send of a message Node takes for its own: no error")
	}
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	ev.next(t, "disconnect")
	ev.next(t, "exit exit code 0")
	if !w.ExitedAfterDisconnect() || !w.IsDead() || w.IsConnected() || w.State() != StateDead {
		t.Errorf("after exit: ExitedAfterDisconnect %v IsDead %v IsConnected %v State %v",
			w.ExitedAfterDisconnect(), w.IsDead(), w.IsConnected(), w.State())
	}
	ev.noErrors(t)
}

// TestNodeJSServer is the cluster documentation's first example: two Node
// workers answer "hello world" on the port the test chose, under each
// policy (SchedReusePort: each worker gets a socket of its own).
func TestNodeJSServer(t *testing.T) {
	for _, p := range []Policy{SchedRR, SchedNone, SchedReusePort} {
		t.Run(p.String(), func(t *testing.T) {
			setPolicy(t, p)
			addr := freePort(t)
			_, port, _ := net.SplitHostPort(addr)
			var evs []*jsEvents
			for range 2 {
				w := forkJS(t, "server.js", "PORT="+port, "HOST=127.0.0.1")
				evs = append(evs, watchJS(w))
			}
			for _, ev := range evs {
				ev.next(t, "online")
				ev.next(t, "listening 127.0.0.1:"+port)
			}
			for range 10 {
				if got := jsGet(t, "http://"+addr+"/"); got != "hello world\n" {
					t.Fatalf("got %q", got)
				}
			}
			if err := Disconnect(testContext(t)); err != nil {
				t.Fatalf("Disconnect: %v", err)
			}
			for _, ev := range evs {
				ev.next(t, "disconnect")
				ev.next(t, "exit exit code 0")
				ev.noErrors(t)
			}
		})
	}
}

// TestNodeJSNotifyRequest is the notifyRequest example: the Go primary
// counts the requests its Node workers report.
func TestNodeJSNotifyRequest(t *testing.T) {
	setPolicy(t, SchedRR)
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	var mu sync.Mutex
	numReqs := 0
	counted := make(chan struct{}, 100)
	var evs []*jsEvents
	for range 2 {
		w := forkJS(t, "notify.js", "PORT="+port, "HOST=127.0.0.1")
		evs = append(evs, watchJS(w))
		w.OnMessage(func(m Message) {
			var msg struct{ Cmd string }
			if m.Decode(&msg) == nil && msg.Cmd == "notifyRequest" {
				mu.Lock()
				numReqs++
				mu.Unlock()
				counted <- struct{}{}
			}
		})
	}
	for _, ev := range evs {
		ev.next(t, "online")
		ev.next(t, "listening")
	}
	const n = 20
	for range n {
		jsGet(t, "http://"+addr+"/")
	}
	for range n {
		recv(t, counted, "a notifyRequest")
	}
	mu.Lock()
	defer mu.Unlock()
	if numReqs != n {
		t.Errorf("numReqs = %d, want %d", numReqs, n)
	}
}

// TestNodeJSIsDead is the isDead example: the worker serves one request and
// kills itself (SIGTERM); IsDead is false at fork and true at exit.
func TestNodeJSIsDead(t *testing.T) {
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	w := forkJS(t, "isdead.js", "PORT="+port, "HOST=127.0.0.1")
	ev := watchJS(w)
	if w.IsDead() {
		t.Fatal("IsDead at fork")
	}
	ev.next(t, "online")
	ev.next(t, "listening")
	if got := jsGet(t, "http://"+addr+"/"); !strings.HasPrefix(got, "Current process\n") {
		t.Errorf("got %q", got)
	}
	exit := make(chan bool, 1)
	w.OnExit(func(ExitStatus) { exit <- w.IsDead() })
	if !recv(t, exit, "the exit") {
		t.Error("IsDead is false at exit")
	}
	if w.ExitedAfterDisconnect() {
		t.Error("ExitedAfterDisconnect after a crash")
	}
}

// TestNodeJSDisconnect is the disconnect example: on listening, the primary
// sends 'shutdown', disconnects the worker and kills it if it has not
// disconnected within the timeout. With connections the worker's shutdown
// handler ends, the disconnect is graceful; with connections that never
// end, the kill comes.
func TestNodeJSDisconnect(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		t.Run(fmt.Sprintf("graceful=%v", graceful), func(t *testing.T) {
			setPolicy(t, SchedRR)
			addr := freePort(t)
			_, port, _ := net.SplitHostPort(addr)
			env := []string{"PORT=" + port, "HOST=127.0.0.1"}
			if graceful {
				env = append(env, "SHUTDOWN_CLOSES=1")
			}
			w := forkJS(t, "disconnect.js", env...)
			ev := watchJS(w)
			ev.next(t, "online")
			ev.next(t, "listening")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			if line, err := r.ReadString('\n'); err != nil || line != "connected\n" {
				t.Fatalf("read %q, %v", line, err)
			}
			if graceful {
				// The client closes once the worker has ended the connection.
				go func() {
					io.Copy(io.Discard, r)
					c.Close()
				}()
			}
			// The example, in Go: on listening (above), shutdown, disconnect,
			// and the kill timer that the disconnect event stops.
			const killAfter = 2 * time.Second
			if err := w.Send("shutdown"); err != nil {
				t.Fatal(err)
			}
			w.Disconnect()
			timeout := time.AfterFunc(killAfter, func() { w.Kill(nil) })
			w.OnDisconnect(func() { timeout.Stop() })
			if graceful {
				ev.next(t, "disconnect")
				ev.next(t, "exit exit code 0")
			} else {
				ev.next(t, "disconnect") // the kill closes the channel
				ev.next(t, "exit signal: terminated")
			}
			if !w.ExitedAfterDisconnect() {
				t.Error("ExitedAfterDisconnect is false")
			}
			ev.noErrors(t)
		})
	}
}

// TestNodeJSSettingsRefused: settings a Node worker cannot run with are
// refused by Fork: no script, Gob, a window out of range.
func TestNodeJSSettingsRefused(t *testing.T) {
	for name, s := range map[string]Settings{
		"no script": {Exec: jsNode(t), Args: []string{}, NodeIPC: true},
		"gob":       {Exec: jsNode(t), Args: []string{"x.js"}, NodeIPC: true, Serialization: Gob},
		"window":    {Exec: jsNode(t), Args: []string{"x.js"}, NodeIPC: true, NodeWindow: maxNodeWindow + 1},
	} {
		old := CurrentSettings()
		if err := SetupPrimary(s); err != nil {
			t.Fatal(err)
		}
		w, err := Fork()
		SetupPrimary(old)
		if err == nil {
			reap(t, w)
			t.Errorf("%s: Fork succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
