package clusternet

// Round-robin (SchedRR): workers that stop accepting, and the connections
// queued for a worker that leaves. A worker stopped by SIGSTOP is in
// listen_rr_linux_test.go.

import (
	"net"
	"os"
	"testing"
	"time"
)

// TestListenRRStuckWorker: under round-robin, workers that do not call Accept
// (one never did, one did once and then stopped, holding a window of credit)
// get no connections: the others serve every one.
func TestListenRRStuckWorker(t *testing.T) {
	for _, nc := range lnNets[:3] {
		t.Run(nc.name, func(t *testing.T) {
			lnUsePolicy(t, SchedRR)
			lnCheckFDs(t)
			asked := nc.address(t)
			once := lnStart(t, nc.network, asked, "once")
			tg := lnTargetFor(nc, once.ready.Addr)
			if r, err := tg.request(testContext(t)); err != nil || r.id != once.ID() {
				t.Fatalf("first request: %+v, %v; want it served by worker %d, the only one accepting", r, err, once.ID())
			}
			never := lnStart(t, nc.network, asked, "noaccept")
			ws := lnStartN(t, 2, nc.network, asked)

			const n = 64
			counts := lnSpray(t, tg, n, 4, nil)
			t.Logf("answers per worker: %v", counts)
			if counts[once.ID()] != 0 || counts[never.ID()] != 0 {
				t.Errorf("stuck workers %d and %d answered %d and %d requests, want none", once.ID(), never.ID(), counts[once.ID()], counts[never.ID()])
			}
			if a, b := counts[ws[0].ID()], counts[ws[1].ID()]; a+b != n || a == 0 || b == 0 {
				t.Errorf("accepting workers %d and %d answered %d and %d of %d requests: want all, shared", ws[0].ID(), ws[1].ID(), a, b, n)
			}
		})
	}
}

// lnWaitHandedOver waits until the primary has handed n connections to w
// that w has not taken, or w gave them back (a worker that does not accept
// returns its queue after a while). It reports whether they were queued for
// w.
func lnWaitHandedOver(t testing.TB, w *Worker, n int) bool {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		var sub *subscription
		for _, s := range w.subs {
			sub = s
		}
		w.mu.Unlock()
		if sub == nil {
			t.Fatalf("worker %d listens nowhere", w.ID())
		}
		sub.sa.mu.Lock()
		sub.look()
		queued, active := sub.queued, sub.active
		sub.sa.mu.Unlock()
		switch {
		case queued >= n:
			return true
		case !active:
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("the primary did not hand %d connections to worker %d", n, w.ID())
	return false
}

// TestListenRRQueuedConns: connections the primary handed to a worker that
// has not taken them go to another worker when that one is killed, closes its
// listener or is disconnected: every client gets an answer.
func TestListenRRQueuedConns(t *testing.T) {
	for _, nc := range lnNets[:3] {
		for _, how := range []string{"kill", "close", "disconnect"} {
			t.Run(nc.name+"/"+how, func(t *testing.T) {
				lnUsePolicy(t, SchedRR)
				lnCheckFDs(t)
				asked := nc.address(t)
				other := lnStart(t, nc.network, asked, "wait")
				stuck := lnStart(t, nc.network, asked, "once")
				tg := lnTargetFor(nc, stuck.ready.Addr)
				if r, err := tg.request(testContext(t)); err != nil || r.id != stuck.ID() {
					t.Fatalf("first request: %+v, %v; want it served by worker %d, the only one accepting", r, err, stuck.ID())
				}

				// The stuck worker holds a window of credit: the next
				// connections are queued for it.
				const n = 20
				dial := "tcp"
				if nc.network == "unix" {
					dial = "unix"
				}
				conns := make([]net.Conn, n)
				for i := range conns {
					conns[i] = lnRawRequest(t, dial, stuck.ready.Addr)
				}
				queued := lnWaitHandedOver(t, stuck.Worker, n)

				switch how {
				case "kill":
					if err := stuck.Kill(os.Kill); err != nil {
						t.Fatal(err)
					}
					waitDone(t, stuck.Worker)
				case "close":
					if rep := stuck.ask(t, "close", "closed"); rep.CloseErr != "" {
						t.Errorf("Close: %s", rep.CloseErr)
					}
				case "disconnect":
					if err := stuck.Disconnect(); err != nil {
						t.Fatal(err)
					}
					waitDone(t, stuck.Worker)
					if !stuck.ExitedAfterDisconnect() {
						t.Error("ExitedAfterDisconnect() = false after Disconnect")
					}
				}
				other.send(t, "go")
				for i, c := range conns {
					r, err := lnReadReply(c, nil, nc.conn)
					if err != nil {
						t.Errorf("connection %d: %v", i, err)
					} else if r.id != other.ID() {
						t.Errorf("connection %d answered by worker %d, want %d", i, r.id, other.ID())
					}
				}
				if !queued {
					t.Logf("worker %d gave its queue back before it was %sed: the connections were not queued for it then", stuck.ID(), how)
				}
			})
		}
	}
}
