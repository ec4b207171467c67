//go:build unix

// The examples are tested as a user runs them: each is built with go build,
// started as a cluster of two workers on a free loopback port, sent
// requests, and stopped with SIGTERM, which must end every process cleanly.
package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// timeout bounds every wait.
const timeout = 20 * time.Second

// build builds the example in directory name and returns the binary's path.
func build(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, "./"+name).CombinedOutput(); err != nil {
		t.Fatalf("go build ./%s: %v\n%s", name, err, out)
	}
	return bin
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// example is a running example program: its primary and its workers.
type example struct {
	t              *testing.T
	addr, url      string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	exited         chan struct{}
	waitErr        error
}

// start runs bin with two workers on a free loopback port. The primary gets
// a process group of its own, which its workers join, so that the cleanup
// can end them all should the test fail midway.
func start(t *testing.T, bin string, args ...string) *example {
	t.Helper()
	addr := freeAddr(t)
	e := &example{t: t, addr: addr, url: "http://" + addr + "/", exited: make(chan struct{})}
	e.cmd = exec.Command(bin, append([]string{"-workers", "2", "-addr", addr}, args...)...)
	e.cmd.Stdout, e.cmd.Stderr = &e.stdout, &e.stderr
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	e.cmd.WaitDelay = 5 * time.Second // should a worker outlive the primary and keep its output open
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		e.waitErr = e.cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-e.exited:
		default:
			syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
			<-e.exited
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", filepath.Base(bin), e.stdout.String(), e.stderr.String())
		}
	})
	return e
}

// client makes each request on a new connection, so that the requests are
// spread over the workers.
var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(body), err
}

// dial opens a connection to the example, closed when the test ends.
func (e *example) dial() net.Conn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(timeout))
	return c
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

var helloBody = regexp.MustCompile(`^hello from worker (\d+) \(pid (\d+)\)\n$`)

// hello makes one request to the hello example and returns the worker's id
// and pid, or ok false if the request failed (the cluster is not up yet).
func (e *example) hello() (id, pid int, ok bool) {
	body, err := get(client, e.url)
	if err != nil {
		return 0, 0, false
	}
	m := helloBody.FindStringSubmatch(body)
	if m == nil {
		e.t.Fatalf("unexpected response %q", body)
	}
	id, _ = strconv.Atoi(m[1])
	pid, _ = strconv.Atoi(m[2])
	return id, pid, true
}

// workers makes requests until those that succeeded came from n distinct
// workers, and returns their pids by id.
func (e *example) workers(n int) map[int]int {
	e.t.Helper()
	seen := map[int]int{}
	defer func() {
		if e.t.Failed() {
			e.t.Logf("pids by worker id: %v", seen)
		}
	}()
	waitFor(e.t, fmt.Sprintf("responses from %d distinct workers", n), func() bool {
		if id, pid, ok := e.hello(); ok {
			seen[id] = pid
		}
		return len(seen) >= n
	})
	return seen
}

// stop sends SIGTERM to the primary (again: a second one is harmless) and
// checks that it exits with code 0 in time, leaving none of the given
// worker processes behind.
func (e *example) stop(workerPIDs ...int) {
	e.t.Helper()
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(timeout):
		e.t.Fatalf("still running %v after SIGTERM", timeout)
	}
	if e.waitErr != nil {
		e.t.Fatalf("exited with %v after SIGTERM", e.waitErr)
	}
	for _, pid := range workerPIDs {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			e.t.Errorf("worker pid %d outlived the primary (kill 0: %v)", pid, err)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestHello(t *testing.T) {
	bin := build(t, "hello")
	for _, policy := range []string{"", "none", "reuseport"} {
		name := policy
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			var args []string
			if policy != "" {
				args = []string{"-policy", policy}
			}
			e := start(t, bin, args...)
			pids := e.workers(2)
			var all []int
			for _, pid := range pids {
				all = append(all, pid)
			}

			if policy == "" {
				// A worker that dies is replaced: worker 3 takes its place.
				if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "worker 3 to serve", func() bool {
					id, pid, _ := e.hello()
					if id == 3 {
						all = append(all, pid)
					}
					return id == 3
				})
				if want := fmt.Sprintf("worker 1 (pid %d) exited (signal: killed)", pids[1]); !strings.Contains(e.stderr.String(), want) {
					t.Errorf("stderr lacks %q", want)
				}
			}

			// Stopping must neither drop requests nor hang on connections:
			// a request half sent at SIGTERM gets its answer though its end
			// comes after; a connection the worker had accepted but on
			// which nothing was sent is closed (HTTP lets a server close a
			// connection it has not used: its client opens another), and
			// neither it nor an idle keep-alive connection holds the worker
			// up.
			keepAlive := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
			defer keepAlive.CloseIdleConnections()
			if _, err := get(keepAlive, e.url); err != nil {
				t.Fatal(err)
			}
			halfSent, unused := e.dial(), e.dial()
			io.WriteString(halfSent, "POST / HTTP/1.1\r\nHost: example\r\nContent-Length: 2\r\n\r\nx")
			time.Sleep(300 * time.Millisecond) // for the workers to take the connections
			e.cmd.Process.Signal(syscall.SIGTERM)
			waitFor(t, "the primary to shut down", func() bool { return strings.Contains(e.stderr.String(), "shutting down") })
			time.Sleep(300 * time.Millisecond) // for the disconnect to reach the workers
			io.WriteString(halfSent, "x")
			resp, err := http.ReadResponse(bufio.NewReader(halfSent), nil)
			if err != nil {
				t.Errorf("request half sent at SIGTERM: %v", err)
			} else {
				body, err := io.ReadAll(resp.Body)
				if err != nil || !helloBody.Match(body) {
					t.Errorf("request half sent at SIGTERM: got %q, %v", body, err)
				}
			}
			if n, err := unused.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Errorf("connection unused at SIGTERM: read %d bytes, %v; want it closed (EOF)", n, err)
			}

			e.stop(all...)
			log := e.stderr.String()
			for _, want := range []string{"worker 1 (pid ", ") online", "listening at " + e.addr, "shutting down", "exited (exit code 0)"} {
				if !strings.Contains(log, want) {
					t.Errorf("stderr lacks %q", want)
				}
			}
		})
	}
}

var numReqs = regexp.MustCompile(`numReqs = (\d+)\n`)

func TestCounter(t *testing.T) {
	e := start(t, build(t, "counter"))
	// count returns the last count the primary printed, or -1.
	count := func() int {
		m := numReqs.FindAllStringSubmatch(e.stdout.String(), -1)
		if m == nil {
			return -1
		}
		n, _ := strconv.Atoi(m[len(m)-1][1])
		return n
	}

	served := 0
	waitFor(t, "the counter to serve", func() bool {
		_, err := get(client, e.url)
		if err == nil {
			served++
		}
		return err == nil
	})
	waitFor(t, "a count", func() bool { return count() >= 0 })
	before := count()
	for range 10 {
		body, err := get(client, e.url)
		if err != nil {
			t.Fatal(err)
		}
		if body != "hello world\n" {
			t.Fatalf("response %q, want %q", body, "hello world\n")
		}
		served++
	}
	waitFor(t, fmt.Sprintf("the count to reach %d (printed %d before the last 10 requests)", served, before), func() bool {
		return count() >= served
	})
	if before >= served {
		t.Errorf("the count did not grow: %d before the last 10 requests, %d after", before, served)
	}
	e.stop()
}

var wsEcho = regexp.MustCompile(`^worker (\d+): (.*)$`)

// wsClient is one WebSocket client of TestWebSocket.
type wsClient struct {
	c         *websocket.Conn
	ids       []int         // the workers that echoed it, in order
	goingAway int           // close frames with status 1001 it got
	err       error         // how a socket ended otherwise
	back      time.Duration // from SIGHUP to its first echo from a new worker
}

// exchange sends text, checks its echo and records which worker sent it.
func (cl *wsClient) exchange(ctx context.Context, text string) error {
	if err := cl.c.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
		return err
	}
	_, b, err := cl.c.Read(ctx)
	if err != nil {
		return err
	}
	m := wsEcho.FindSubmatch(b)
	if m == nil || string(m[2]) != text {
		return fmt.Errorf("echo %q for %q", b, text)
	}
	id, _ := strconv.Atoi(string(m[1]))
	cl.ids = append(cl.ids, id)
	return nil
}

// A reload with 40 WebSockets open: every socket gets a close frame with
// status 1001 (going away) from its leaving worker, none is cut (EOF,
// reset), and each client reconnects and exchanges a message with one of
// the new workers. The old workers exit with code 0: they were not killed
// at the shutdown timeout.
func TestWebSocket(t *testing.T) {
	e := start(t, build(t, "websocket"))
	waitFor(t, "two workers listening", func() bool { return strings.Count(e.stderr.String(), "listening at") >= 2 })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	url := "ws://" + e.addr + "/ws"

	const n = 40
	clients := make([]*wsClient, n)
	old := map[int]bool{} // the workers before the reload
	for i := range clients {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		cl := &wsClient{c: c}
		clients[i] = cl
		t.Cleanup(func() { cl.c.CloseNow() })
		if err := cl.exchange(ctx, fmt.Sprintf("client %d: hello", i)); err != nil {
			t.Fatal(err)
		}
		old[cl.ids[0]] = true
	}
	if len(old) != 2 {
		t.Fatalf("the %d sockets went to workers %v; want both", n, old)
	}

	sent := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Go(func() {
			// Wait for the worker to go away, reconnect and say hello again,
			// until a new worker answers.
			for old[cl.ids[len(cl.ids)-1]] {
				_, _, err := cl.c.Read(ctx)
				if err == nil {
					err = errors.New("a message came unasked")
				}
				for websocket.CloseStatus(err) == websocket.StatusGoingAway {
					cl.goingAway++
					if cl.c, _, err = websocket.Dial(ctx, url, nil); err != nil {
						cl.err = fmt.Errorf("reconnecting: %w", err)
						return
					}
					err = cl.exchange(ctx, fmt.Sprintf("client %d: hello again", i))
				}
				if err != nil {
					cl.err = fmt.Errorf("the socket to worker %d ended with %v; want a close frame with status 1001 (going away)", cl.ids[len(cl.ids)-1], err)
					return
				}
			}
			cl.back = time.Since(sent)
		})
	}
	wg.Wait()
	var last time.Duration
	for i, cl := range clients {
		switch {
		case cl.err != nil:
			t.Errorf("client %d (workers %v): %v", i, cl.ids, cl.err)
		case cl.goingAway == 0:
			t.Errorf("client %d (workers %v): no close frame with status 1001", i, cl.ids)
		}
		last = max(last, cl.back)
	}
	waitFor(t, "the reload to finish", func() bool { return strings.Contains(e.stderr.String(), "msg=reloaded") })
	t.Logf("a reload with %d WebSockets: every client back on a new worker %v after SIGHUP, the primary reloaded after %v",
		n, last.Round(time.Millisecond), time.Since(sent).Round(time.Millisecond))

	log := e.stderr.String()
	if strings.Contains(log, "killing the old worker") {
		t.Error("an old worker was killed at the shutdown timeout")
	}
	var pids []int
	for id := range old {
		m := regexp.MustCompile(fmt.Sprintf(`worker %d \(pid (\d+)\) exited \((.*)\)`, id)).FindStringSubmatch(log)
		if m == nil || m[2] != "exit code 0" {
			t.Errorf("worker %d: %v; want it to have exited with code 0", id, m)
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	for _, cl := range clients {
		cl.c.Close(websocket.StatusNormalClosure, "")
	}
	e.stop(pids...)
}

// TestHelloUpgrade deploys hello as an operator would: a new binary moved
// over the old, then SIGUSR2 to the primary. The old primary hands the
// cluster over and exits with code 0, a new primary with new workers
// serves, and no request fails meanwhile.
func TestHelloUpgrade(t *testing.T) {
	bin := build(t, "hello")
	logPath := filepath.Join(t.TempDir(), "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	e := &example{t: t, addr: freeAddr(t), exited: make(chan struct{})}
	e.url = "http://" + e.addr + "/"
	// Output to a file, not a pipe: the new primary writes there after the
	// old one has exited.
	e.cmd = exec.Command(bin, "-workers", "2", "-addr", e.addr)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the new primary joins it too
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		e.waitErr = e.cmd.Wait()
		close(e.exited)
	}()
	output := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	t.Cleanup(func() {
		syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL) // whatever is left, should the test fail
		<-e.exited
		if t.Failed() {
			t.Logf("hello's output:\n%s", output())
		}
	})
	before := e.workers(2)

	stop, failed := make(chan struct{}), make(chan []string, 1)
	go func() {
		var errs []string
		for {
			select {
			case <-stop:
				failed <- errs
				return
			default:
			}
			if _, err := get(client, e.url); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}()
	// The deploy: a new binary moved over the old, then SIGUSR2.
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	e.cmd.Process.Signal(syscall.SIGUSR2)
	select {
	case <-e.exited:
	case <-time.After(timeout):
		t.Fatal("the old primary did not exit after SIGUSR2")
	}
	if e.waitErr != nil {
		t.Fatalf("the old primary exited with %v after handing over", e.waitErr)
	}
	after := e.workers(2)
	close(stop)
	if errs := <-failed; len(errs) > 0 {
		t.Errorf("%d requests failed during the upgrade: %v", len(errs), errs)
	}
	for _, pid := range after {
		for _, old := range before {
			if pid == old {
				t.Errorf("worker pid %d served before and after the upgrade", pid)
			}
		}
	}
	m := regexp.MustCompile(`primary (\d+): 2 workers`).FindAllStringSubmatch(output(), -1)
	if len(m) != 2 {
		t.Fatalf("want the start of two primaries in the output, found %d", len(m))
	}
	primary, _ := strconv.Atoi(m[1][1])
	syscall.Kill(primary, syscall.SIGTERM)
	for _, pid := range append(slices.Collect(maps.Values(after)), primary) {
		waitFor(t, fmt.Sprintf("pid %d to exit", pid), func() bool { return gone(pid) })
	}
	if !strings.Contains(output(), "took over the cluster from the old primary") {
		t.Error("the new primary did not log its takeover")
	}
}

// gone reports whether process pid has exited: it no longer exists, or is
// a zombie (the new primary's parent was the old primary, gone before it).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}
