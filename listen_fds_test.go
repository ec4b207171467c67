package clusternet

import (
	"testing"
	"time"
)

// TestListenFDCount: thousands of connections leave the primary's and the
// workers' descriptor counts where they started.
func TestListenFDCount(t *testing.T) {
	if _, err := countFDs(); err != nil {
		t.Skipf("cannot count descriptors here: %v", err)
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets[:3] {
				t.Run(nc.name, func(t *testing.T) {
					n := 1000
					if p == SchedRR && nc.network != "tcp6" {
						n = 2000
					}
					testListenFDCount(t, p, nc, n)
				})
			}
		})
	}
}

func testListenFDCount(t *testing.T, p Policy, nc lnNetCase, n int) {
	lnUsePolicy(t, p)
	asked := nc.address(t)
	ws := lnStartN(t, 2, nc.network, asked)
	tg := lnTargetFor(nc, ws[0].ready.Addr)

	base, _ := countFDs()
	baseList := fdList()
	wbase := make([]lnReport, len(ws))
	for i, w := range ws {
		wbase[i] = w.ask(t, "fds", "fds")
		if wbase[i].Err != "" {
			t.Fatalf("worker %d: %s", w.ID(), wbase[i].Err)
		}
	}

	counts := lnSpray(t, tg, n, 8, nil)
	t.Logf("%d connections, answers per worker: %v", n, counts)

	// Closing is asynchronous on both ends of a connection: wait for the
	// counts to come back.
	deadline := time.Now().Add(testTimeout)
	for {
		now, _ := countFDs()
		settled := now <= base
		var wnow []lnReport
		for i, w := range ws {
			r := w.ask(t, "fds", "fds")
			wnow = append(wnow, r)
			settled = settled && r.N <= wbase[i].N
		}
		if settled {
			return
		}
		if time.Now().After(deadline) {
			if now > base {
				t.Errorf("primary: %d descriptors open, %d before; %s", now, base, fdDiff(baseList, fdList()))
			}
			for i, w := range ws {
				if wnow[i].N > wbase[i].N {
					t.Errorf("worker %d: %d descriptors open, %d before; %s", w.ID(), wnow[i].N, wbase[i].N, fdDiff(wbase[i].Detail, wnow[i].Detail))
				}
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
