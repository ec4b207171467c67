//go:build unix

package clusternet

// Node's tests of workers outliving their primary: test-cluster-primary-kill,
// -primary-error. The primary is the test binary run again, in a role of
// primaries; it prints its workers' pids.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

func init() {
	// test-cluster-primary-kill's primary: one worker; exit 0 once it listens.
	primaries["node-primary-kill"] = func() {
		listening := make(chan struct{})
		var once sync.Once
		OnListening(func(*Worker, Address) { once.Do(func() { close(listening) }) })
		w, err := Fork(envHelper + "=node-http")
		if err != nil {
			fmt.Println("Fork:", err)
			os.Exit(1)
		}
		fmt.Println(w.Process().Pid)
		<-listening
		os.Exit(0)
	}
	// test-cluster-primary-error's primary: two workers; panic once both
	// listen (Node: throw, uncaught).
	primaries["node-primary-error"] = func() {
		var mu sync.Mutex
		n := 0
		both := make(chan struct{})
		OnListening(func(*Worker, Address) {
			mu.Lock()
			defer mu.Unlock()
			if n++; n == 2 {
				close(both)
			}
		})
		for range 2 {
			w, err := Fork(envHelper + "=node-http")
			if err != nil {
				fmt.Println("Fork:", err)
				os.Exit(1)
			}
			fmt.Println(w.Process().Pid)
		}
		<-both
		panic("accidental error")
	}
}

// nodeWorkerPID reads a worker pid the primary printed and makes sure that
// worker is gone when the test ends.
func nodeWorkerPID(t *testing.T, p *primary) int {
	t.Helper()
	line := p.line(t)
	pid, err := strconv.Atoi(line)
	if err != nil || pid <= 0 {
		t.Fatalf("the primary printed %q, want a worker's pid", line)
	}
	t.Cleanup(func() {
		if !processGone(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return pid
}

// nodeWaitGone waits (bounded) for process pid to end, as Node's test polls
// common.isAlive.
func nodeWaitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Errorf("worker %d still running after its primary exited", pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNodePrimaryKill is test-cluster-primary-kill: a primary that exits
// (code 0) once its worker listens leaves no worker running.
func TestNodePrimaryKill(t *testing.T) {
	p := startPrimary(t, "node-primary-kill")
	pid := nodeWorkerPID(t, p)
	if err := p.wait(t); err != nil {
		t.Errorf("the primary exited with %v, want code 0", err)
	}
	nodeWaitGone(t, pid)
}

// TestNodePrimaryError is test-cluster-primary-error: a primary that dies of
// an error once its two workers listen leaves neither running.
//
// Go differs: Node's uncaught exception exits with code 1; Go's unrecovered
// panic exits with code 2.
func TestNodePrimaryError(t *testing.T) {
	p := startPrimary(t, "node-primary-error") // its panic's trace shows in the test's output

	pids := []int{nodeWorkerPID(t, p), nodeWorkerPID(t, p)}
	err := p.wait(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("the primary exited with %v, want code 2 (a panic)", err)
	}
	for _, pid := range pids {
		nodeWaitGone(t, pid)
	}
}
