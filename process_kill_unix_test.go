//go:build unix

package clusternet

// Killing: signals from the primary, and the primary itself killed.

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

func init() {
	// pm-primary forks a worker, prints the worker's pid once it is online,
	// and waits to be killed (TestProcessPrimaryDeath).
	primaries["pm-primary"] = func() {
		online := make(chan struct{})
		var once sync.Once
		OnOnline(func(*Worker) { once.Do(func() { close(online) }) })
		w, err := Fork(envHelper + "=idle")
		if err != nil {
			fmt.Fprintln(os.Stderr, "sub-primary: Fork:", err)
			os.Exit(2)
		}
		select {
		case <-online:
		case <-time.After(testTimeout):
			fmt.Fprintln(os.Stderr, "sub-primary: the worker did not come online")
			w.Kill(os.Kill)
			os.Exit(2)
		}
		fmt.Println(w.Process().Pid)
		// The test kills this process; if it does not, end anyway.
		time.Sleep(2 * testTimeout)
		w.Kill(os.Kill)
		os.Exit(1)
	}
}

// Kill(os.Kill) kills with SIGKILL: the exit event has the signal and code
// -1, and ExitedAfterDisconnect stays false.
func TestProcessKillSIGKILL(t *testing.T) {
	require(t, "signals")
	w := pmFork(t, "idle")
	pmEvents(t, w, "the online event", pmHas("online"))
	status := pmOnExit(w)
	if err := w.Kill(os.Kill); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if slices.Contains(Workers(), w) {
		t.Errorf("worker %d still in Workers() after Kill", w.ID())
	}
	st := recv(t, status, "the exit event")
	if st.Signal != syscall.SIGKILL || st.Code != -1 {
		t.Errorf("exit status %+v, want SIGKILL and code -1", st)
	}
	if w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = true after a kill from the primary")
	}
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if err := w.Kill(os.Kill); err != nil {
		t.Errorf("Kill of a dead worker: %v, want nil", err)
	}
}

// Kill(nil) sends SIGTERM, and the exit event says so.
func TestProcessKillDefaultSignal(t *testing.T) {
	require(t, "signals")
	w := pmFork(t, "idle")
	pmEvents(t, w, "the online event", pmHas("online"))
	status := pmOnExit(w)
	if err := w.Kill(nil); err != nil {
		t.Fatalf("Kill(nil): %v", err)
	}
	st := recv(t, status, "the exit event")
	if st.Signal != syscall.SIGTERM || st.Code != -1 {
		t.Errorf("exit status %+v, want SIGTERM and code -1", st)
	}
	if st.String() != "signal: "+syscall.SIGTERM.String() {
		t.Errorf("ExitStatus.String() = %q", st.String())
	}
	if w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = true after a kill from the primary")
	}
}

// When the primary dies (SIGKILL, no chance to clean up), its workers are
// gone within a second.
func TestProcessPrimaryDeath(t *testing.T) {
	require(t, "signals")
	p := startPrimary(t, "pm-primary")
	line := p.line(t)
	pid, err := strconv.Atoi(line)
	if err != nil || pid <= 0 {
		t.Fatalf("sub-primary printed %q, want its worker's pid", line)
	}
	if processGone(pid) {
		t.Fatalf("worker %d is not running before the primary dies", pid)
	}
	t.Cleanup(func() {
		if !processGone(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	killed := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for !processGone(pid) {
		if time.Since(killed) > time.Second {
			t.Fatalf("worker %d still running %v after its primary was killed", pid, time.Since(killed))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.wait(t); err == nil {
		t.Errorf("the sub-primary exited normally; it should have been killed")
	}
}
