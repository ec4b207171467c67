package clusternet

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestListenRRFrozenWorker: the connections queued for a worker that is
// stopped as a whole (SIGSTOP: not even its channel reader runs) are taken
// back from its handoff socket and served by the other worker; once it runs
// again, it asks for connections again and gets its share.
func TestListenRRFrozenWorker(t *testing.T) {
	for _, nc := range lnNets[:3] {
		t.Run(nc.name, func(t *testing.T) {
			lnUsePolicy(t, SchedRR)
			lnCheckFDs(t)
			ws := lnStartN(t, 2, nc.network, nc.address(t))
			frozen, other := ws[0], ws[1]
			tg := lnTargetFor(nc, frozen.ready.Addr)
			lnUntilAll(t, tg, []int{frozen.ID(), other.ID()}, 50)

			pid := frozen.Process().Pid
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			stopped := true
			defer func() {
				if stopped {
					syscall.Kill(pid, syscall.SIGCONT)
				}
			}()
			// The signal is sent, not yet obeyed: a worker still running
			// would take connections that are then its own.
			waitStopped(t, pid)
			const n = 64
			counts := lnSpray(t, tg, n, 8, nil) // fails the test on any error
			if counts[other.ID()] != n {
				t.Errorf("answers per worker while worker %d was stopped: %v; want all %d from worker %d", frozen.ID(), counts, n, other.ID())
			}

			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			stopped = false
			lnUntilAll(t, tg, []int{frozen.ID(), other.ID()}, 200)
		})
	}
}

// waitStopped waits until every thread of process pid is stopped by a
// signal.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	stopped := func() bool {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(tasks) == 0 {
			t.Fatalf("threads of process %d: %v", pid, err)
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(task)
			// "tid (comm) state ...": comm may hold anything but the last ')'.
			i := bytes.LastIndexByte(stat, ')')
			if err == nil && (i < 0 || len(stat) < i+3 || stat[i+2] != 'T') {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(testTimeout); !stopped(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not stop", pid)
		}
	}
}
