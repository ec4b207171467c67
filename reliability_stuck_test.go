//go:build unix

package clusternet

import (
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	helpers["rel-msgblock"] = func() {
		// Its message handler never returns: the worker's inbox fills, then
		// its channel, and it never reads the primary's disconnect.
		Self().OnMessage(func(Message) { select {} })
		select {}
	}
}

// TestStuckWorker: a worker whose handler blocks forever, one that stops
// calling Accept and one whose message handler blocks forever do not stall
// the others; Disconnect, then Kill after a timeout, frees everything.
func TestStuckWorker(t *testing.T) {
	for _, tc := range relPolicies {
		t.Run(tc.name, func(t *testing.T) {
			setPolicy(t, tc.policy)
			fds := openFDs(t)
			addr := freePort(t)
			logs := t.TempDir()
			good := relFork(t, 2, addr)
			block := relFork(t, 1, addr, "REL_MODE=block", "REL_LOG="+logs)[0]
			stopped := relFork(t, 1, addr, "REL_MODE=stopaccept", "REL_ACCEPTS=2")[0]
			msgBlock := fork(t, "rel-msgblock")

			// The message handler of msgBlock is stuck: its inbox, then its
			// channel fill up.
			for range 3000 {
				if err := msgBlock.Send(strings.Repeat("x", 1000)); err != nil {
					t.Fatal(err)
				}
			}

			// Requests at a steady pace, each on its own connection.
			res := &relResult{}
			const total = 300
			var wg sync.WaitGroup
			for range total {
				wg.Go(func() { relRequest(res, addr, 30*time.Second) })
				time.Sleep(5 * time.Millisecond)
			}
			// Meanwhile the good workers answer messages.
			for _, w := range good {
				in := messages(w)
				for i := range 100 {
					echo(t, w, in, i)
				}
			}
			// Every request the blocked handler does not hold is answered.
			blocked := func() int {
				if tc.policy == SchedRR {
					return int(block.Stats().Accepted)
				}
				n := 0
				for _, ts := range relLogged(t, logs, []int{block.ID()}) {
					n += len(ts)
				}
				return n
			}
			deadline := time.Now().Add(testTimeout)
			for res.done()+blocked() < total {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d requests done, %d held by the blocked worker: the others stalled", res.done(), total, blocked())
				}
				time.Sleep(10 * time.Millisecond)
			}
			held := blocked()
			t.Logf("SchedRR=%v: %v while %d requests are held by the blocked handler; served by worker: %v", tc.policy == SchedRR, res, held, res.servedBy)
			if res.servedBy[stopped.ID()] > 2 {
				t.Errorf("the worker that stopped accepting answered %d requests, more than it accepted", res.servedBy[stopped.ID()])
			}

			start := time.Now()
			for _, w := range []*Worker{block, stopped, msgBlock} {
				if err := w.Disconnect(); err != nil {
					t.Fatalf("Disconnect worker %d: %v", w.ID(), err)
				}
			}
			var killed []int
			for _, w := range []*Worker{block, stopped, msgBlock} {
				select {
				case <-w.Done():
				case <-time.After(time.Second):
					killed = append(killed, w.ID())
					w.Kill(os.Kill)
					waitDone(t, w)
				}
			}
			wg.Wait()
			t.Logf("stuck workers gone %v after Disconnect; killed after the 1s timeout: %v; requests: %v", time.Since(start).Round(time.Millisecond), killed, res)
			if slices.Contains(killed, stopped.ID()) {
				t.Errorf("the worker that stopped accepting did not leave on Disconnect")
			}
			if res.served+res.failed != total || res.failed != held {
				t.Errorf("requests: %v; want %d served and the %d held by the blocked worker failed", res, total-held, held)
			}
			relServes(t, addr)
			for _, w := range good {
				if st := w.Stats(); st.InFlight != 0 {
					t.Errorf("worker %d: %d connections handed over and not taken", w.ID(), st.InFlight)
				}
			}
			if st := Stats(); st.Pending != 0 {
				t.Errorf("%d connections wait in the primary", st.Pending)
			}
			relStopAll(t)
			fdsAtMost(t, fds, "after the stuck workers were disconnected and killed")
		})
	}
}
