//go:build unix

package clusternet

import (
	"syscall"
	"testing"
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
