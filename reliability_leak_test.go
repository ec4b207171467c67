//go:build unix

package clusternet

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestLeakCheck: after many connections and messages, with and without
// workers crashing in between, the primary's descriptors and goroutines
// are back where they started once the workers are gone.
func TestLeakCheck(t *testing.T) {
	conns, msgs := 10000, 2000
	if relFull() {
		conns, msgs = 100000, 10000
	}
	for _, crash := range []bool{false, true} {
		name := "clean"
		if crash {
			name = "crashes"
		}
		t.Run(name, func(t *testing.T) {
			setPolicy(t, SchedRR)
			addr := freePort(t)
			// Warm up: whatever the package starts once is started.
			ws := relFork(t, 1, addr)
			res, done := relLoad(context.Background(), addr, 2, 20, 5*time.Second)
			<-done
			echo(t, ws[0], messages(ws[0]), 0)
			relStopAll(t)
			fds, gs := relSettle(t, 0, 0, false)

			start := time.Now()
			ws = relFork(t, 4, addr)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			res, done = relLoad(ctx, addr, 8, conns, 10*time.Second)
			// Messages go to each slot's current worker; one that was
			// killed is retried on its replacement.
			var mu sync.Mutex
			inboxes := make(map[*Worker]<-chan Message)
			for _, w := range ws {
				inboxes[w] = messages(w)
			}
			current := func(i int) (*Worker, <-chan Message) {
				mu.Lock()
				defer mu.Unlock()
				return ws[i], inboxes[ws[i]]
			}
			var msgWG sync.WaitGroup
			var echoed atomic.Int64
			for i := range ws {
				msgWG.Go(func() {
					for j := 0; j < msgs/len(ws); {
						w, in := current(i)
						if tryEcho(t, w, in, i*msgs+j) {
							echoed.Add(1)
							j++
						}
					}
				})
			}
			kills := 0
			if crash {
				for kills < 10 {
					select {
					case <-done:
					case <-time.After(300 * time.Millisecond):
					}
					i := rand.IntN(len(ws))
					victim := ws[i]
					nw := relFork(t, 1, addr)[0]
					mu.Lock()
					inboxes[nw] = messages(nw)
					ws[i] = nw
					mu.Unlock()
					syscall.Kill(victim.Process().Pid, syscall.SIGKILL)
					kills++
				}
			}
			recv(t, done, "the client")
			msgWG.Wait()
			took := time.Since(start)
			relStopAll(t)
			gotFDs, gotGs := relSettle(t, fds, gs, true)
			t.Logf("%d connections (%v), %d messages, %d workers killed, in %v: descriptors %d before, %d after; goroutines %d before, %d after",
				conns, res, msgs, kills, took.Round(time.Millisecond), fds, gotFDs, gs, gotGs)
			if res.done() != conns || res.served == 0 || !crash && res.served != conns {
				t.Errorf("connections: %v, want %d served", res, conns)
			}
			if echoed.Load() != int64(msgs) {
				t.Errorf("%d messages echoed, want %d", echoed.Load(), msgs)
			}
		})
	}
}

// relSettle waits (bounded) until the descriptors and goroutines are at most
// fds and gs, and returns them. With check false it only lets the counts
// settle, for a baseline.
func relSettle(t testing.TB, fds, gs int, check bool) (int, int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	lastF, lastG := -1, -1
	for {
		f, g := openFDs(t), runtime.NumGoroutine()
		if check && f <= fds && g <= gs || !check && f == lastF && g == lastG {
			return f, g
		}
		if time.Now().After(deadline) {
			if check {
				buf := make([]byte, 1<<20)
				t.Errorf("descriptors %d (want at most %d), goroutines %d (want at most %d); goroutines:\n%s", f, fds, g, gs, buf[:runtime.Stack(buf, true)])
			}
			return f, g
		}
		lastF, lastG = f, g
		time.Sleep(50 * time.Millisecond)
	}
}
