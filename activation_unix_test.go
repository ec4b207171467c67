//go:build unix

package clusternet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	// activation serves ADDR from workers; the socket must come from
	// systemd-style activation, since the test holds the port.
	primaries["activation"] = func() {
		SetupPrimary(Settings{Env: []string{envHelper + "=activation-worker", "ADDR=" + os.Getenv("ADDR")}})
		listening := make(chan Address, 2)
		OnListening(func(_ *Worker, a Address) { listening <- a })
		OnMessage(func(_ *Worker, m Message) { fmt.Printf("worker: %s\n", m.Raw()) })
		for range 2 {
			if _, err := Fork(); err != nil {
				fmt.Println("fork:", err)
				os.Exit(1)
			}
		}
		for range 2 {
			fmt.Println("listening", <-listening)
		}
		io.Copy(io.Discard, os.Stdin) // the test closes stdin to stop us
		Disconnect(testContext(nopTB{}))
	}
	helpers["activation-worker"] = func() {
		ln, err := Listen("tcp4", os.Getenv("ADDR"))
		if err != nil {
			Self().Send(err.Error())
			select {}
		}
		ServeHTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%d", Self().ID())
		})}, ln)
	}
}

// nopTB lets a sub-process primary use testContext.
type nopTB struct{ testing.TB }

func (nopTB) Cleanup(func()) {}

// TestSocketActivation starts a primary as systemd does: the listening socket
// as descriptor 3, LISTEN_FDS=1 and LISTEN_PID its own pid. The test keeps
// the port bound, so the primary can only serve it through activation.
func TestSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addr := ln.Addr().String()

	// sh sets LISTEN_PID to its own pid, which exec keeps.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run=^$`, os.Args[0])
	cmd.Env = append(os.Environ(), envPrimary+"=activation", "ADDR="+addr, "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
	cmd.ExtraFiles = []*os.File{f}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
	lines := bufio.NewScanner(stdout)
	for i := 0; i < 2; i++ {
		if !lines.Scan() {
			t.Fatalf("primary ended: %v", lines.Err())
		}
		if line := lines.Text(); !strings.HasPrefix(line, "listening ") {
			t.Fatalf("primary: %s", line)
		} else if got := strings.TrimPrefix(line, "listening "); got != addr {
			t.Fatalf("workers listen at %s, want the activated %s", got, addr)
		}
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testTimeout}
	seen := map[string]int{}
	for range 10 {
		body, err := get(c, "http://"+addr)
		if err != nil {
			t.Fatal(err)
		}
		seen[body]++
	}
	if len(seen) != 2 {
		t.Fatalf("responses by worker: %v, want both workers", seen)
	}
	// The port is really held by the activated socket, not bound anew.
	if _, err := net.Listen("tcp4", addr); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("binding %s again: %v, want EADDRINUSE", addr, err)
	}
}
