//go:build unix

package clusternet

// Node's test-listen-fd-cluster: a primary that inherits a listening
// descriptor, and a worker that serves it. Node's worker listens on
// {fd: 3}, the primary's descriptor 3; in Go that is socket activation
// (activation.go): the primary is given the socket as descriptor 3 with
// LISTEN_FDS=1 and LISTEN_PID, and a worker's Listen of the address the
// socket is bound to is served from it instead of a new bind.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	// node-listen-fd is Node's "master": it forks one worker and says
	// "started worker PID" once the worker is ready. It stays until killed
	// (Node's parent kills it), or until its standard input closes (Node's
	// master exits when its parent's channel goes).
	primaries["node-listen-fd"] = func() {
		if err := SetupPrimary(Settings{Env: []string{envHelper + "=node-listen-fd-worker", "ADDR=" + os.Getenv("ADDR")}}); err != nil {
			fmt.Println("setup:", err)
			os.Exit(1)
		}
		w, err := Fork()
		if err != nil {
			fmt.Println("fork:", err)
			os.Exit(1)
		}
		w.OnMessage(func(m Message) {
			var s string
			if m.Decode(&s) == nil && s == "worker ready" {
				fmt.Println("started worker", w.Process().Pid)
			} else {
				fmt.Printf("worker: %s\n", m.Raw())
			}
		})
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	// node-listen-fd-worker is Node's worker: an HTTP server on the
	// primary's inherited socket that answers "hello from worker\n".
	helpers["node-listen-fd-worker"] = func() {
		ln, err := Listen("tcp4", os.Getenv("ADDR"))
		nodeCheck(err == nil, "Listen(%s): %v", os.Getenv("ADDR"), err)
		Self().Send("worker ready")
		ServeHTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello from worker\n")
		})}, ln)
	}
}

// TestNodeListenFdCluster is test-listen-fd-cluster: the test listens,
// starts the primary with the listening socket as its descriptor 3
// (LISTEN_FDS=1: Node passes server._handle in stdio[3]) and closes its own
// copy, so that the primary holds the only one; the primary forks a worker
// that serves it; a GET to the port gets 200 "hello from worker\n"; the
// test then kills the primary (Node: parent.kill()). Beyond Node: a
// connection queued on the socket before the primary started is served
// (the worker serves that very socket), and the worker dies with the
// primary.
func TestNodeListenFdCluster(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Beyond Node: a connection queued on the socket before the primary
	// exists is served too, so the worker serves that very socket.
	early, err := net.DialTimeout("tcp4", addr, testTimeout)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	defer early.Close()
	// sh sets LISTEN_PID to its own pid, which exec keeps.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run=^$`, os.Args[0])
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLUSTERNET_") && !strings.HasPrefix(kv, "LISTEN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envPrimary+"=node-listen-fd", "ADDR="+addr, "LISTEN_FDS=1")
	cmd.ExtraFiles = []*os.File{f}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close() // Node's server.close(): the primary holds the only copy
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(testTimeout):
			cmd.Process.Kill()
			<-exited
			t.Error("the primary did not stop")
		}
	})

	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var pidText string
	for pidText == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("the primary ended before starting its worker")
			}
			if p, found := strings.CutPrefix(line, "started worker "); found {
				pidText = p
			} else {
				t.Errorf("primary: %s", line)
			}
		case <-time.After(testTimeout):
			t.Fatal("timed out waiting for the primary to start its worker")
		}
	}
	workerPid, err := strconv.Atoi(pidText)
	if err != nil {
		t.Fatalf("primary: started worker %q", pidText)
	}

	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testTimeout}
	res, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	early.SetDeadline(time.Now().Add(testTimeout))
	fmt.Fprintf(early, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	earlyRes, earlyErr := http.ReadResponse(bufio.NewReader(early), nil)
	var earlyBody []byte
	if earlyErr == nil {
		earlyBody, earlyErr = io.ReadAll(earlyRes.Body)
	}
	// Kill the primary before the assertions, as Node does.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		exited <- nil // for the cleanup
	case <-time.After(testTimeout):
		t.Fatal("the primary did not exit on SIGTERM")
	}
	if err != nil || string(body) != "hello from worker\n" || res.StatusCode != 200 {
		t.Errorf("GET: %d %q (%v), want 200 %q", res.StatusCode, body, err, "hello from worker\n")
	}
	if earlyErr != nil || string(earlyBody) != "hello from worker\n" || earlyRes.StatusCode != 200 {
		t.Errorf("GET on the connection queued before the primary started: %q (%v), want 200 %q", earlyBody, earlyErr, "hello from worker\n")
	}
	deadline := time.Now().Add(testTimeout)
	for !processGone(workerPid) {
		if time.Now().After(deadline) {
			syscall.Kill(workerPid, syscall.SIGKILL)
			t.Fatalf("worker %d outlived its primary", workerPid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
