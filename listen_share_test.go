package clusternet

// Workers sharing an address: every policy with every network, the
// listening events, a worker listening twice, a worker disconnected while it
// serves.

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestListenPolicyNetwork runs every policy with every network and three
// workers on one address asked for with port 0: they all listen on the same
// real address, all get traffic, each gets the net package's connections, and
// one worker's Close unblocks its Accept with net.ErrClosed and leaves the
// others serving.
func TestListenPolicyNetwork(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets {
				t.Run(nc.name, func(t *testing.T) { testListenPolicyNetwork(t, p, nc) })
			}
		})
	}
}

func testListenPolicyNetwork(t *testing.T, p Policy, nc lnNetCase) {
	lnUsePolicy(t, p)
	lnCheckFDs(t)
	asked := nc.address(t)
	ws := lnStartN(t, 3, nc.network, asked)

	got := ws[0].ready.Addr
	lnCheckAddr(t, nc.network, asked, got)
	for _, w := range ws {
		if w.ready.Addr != got {
			t.Errorf("worker %d listens at %s, worker %d at %s: want one address", w.ID(), w.ready.Addr, ws[0].ID(), got)
		}
		for _, kind := range []string{"w-listening", "listening"} {
			if a := w.mb.wait(t, kind).addr; a.String() != got || a.Network != nc.network {
				t.Errorf("worker %d: %s event for %+v, want %s %s", w.ID(), kind, a, nc.network, got)
			}
		}
	}
	if sa := lnSharedAddr(nc.network, asked); sa == nil {
		t.Errorf("the primary has no server for %s %s", nc.network, asked)
	} else if want := lnWantMode(p, nc.network, false); sa.mode != want {
		t.Errorf("the primary shares %s %s in mode %q, want %q", nc.network, asked, sa.mode, want)
	}

	tg := lnTargetFor(nc, got)
	ids := lnIDs(ws)
	counts := lnUntilAll(t, tg, ids, 3000)
	t.Logf("answers per worker: %v", counts)
	if !lnIsPacket(nc.network) {
		for _, w := range ws {
			if typ := w.mb.wait(t, "conn").rep.Detail; !lnConnTypeOK(typ, nc.conn) {
				t.Errorf("worker %d: Accept returned a %s, want a %s", w.ID(), typ, nc.conn)
			}
		}
	}

	rep := ws[0].ask(t, "close", "closed")
	if rep.CloseErr != "" || !rep.ErrClosed {
		t.Errorf("worker %d: Close returned %q; the blocked Accept (ReadFrom) returned %q, want net.ErrClosed", ws[0].ID(), rep.CloseErr, rep.Err)
	}
	if nc.network == "unix" {
		if _, err := os.Stat(asked); err != nil {
			t.Errorf("socket file after one worker's Close: %v", err)
		}
	}
	counts = lnUntilAll(t, tg, ids[1:], 3000)
	t.Logf("answers per worker after worker %d's Close: %v", ws[0].ID(), counts)
}

// TestListenListeningEvent: the worker's and the primary-wide listening
// events carry the real address and its type.
func TestListenListeningEvent(t *testing.T) {
	cases := []struct {
		network, host string
		typ           AddressType
	}{
		{"tcp", "127.0.0.1", TCP4},
		{"tcp4", "127.0.0.1", TCP4},
		{"tcp6", "::1", TCP6},
		{"unix", "", Unix},
		{"udp", "127.0.0.1", UDP4},
		{"udp4", "127.0.0.1", UDP4},
		{"udp6", "::1", UDP6},
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.network, func(t *testing.T) {
					lnUsePolicy(t, p)
					asked := lnNetCase{network: c.network}.address(t)
					w := lnStart(t, c.network, asked)
					want := Address{Network: c.network, Host: c.host, Type: c.typ}
					if c.typ == Unix {
						want.Host = asked
					} else {
						_, port, _ := net.SplitHostPort(w.ready.Addr)
						want.Port, _ = strconv.Atoi(port)
						if want.Port == 0 {
							t.Errorf("worker listens at %s", w.ready.Addr)
						}
					}
					for _, kind := range []string{"w-listening", "listening"} {
						if got := w.mb.wait(t, kind).addr; got != want {
							t.Errorf("%s event: %+v, want %+v", kind, got, want)
						}
					}
					if s := w.State(); s != StateListening {
						t.Errorf("State() = %v after the listening event, want %v", s, StateListening)
					}
				})
			}
		})
	}
}

// TestListenTwiceInOneWorker: as with net.Listen in one process, a worker
// that listens twice on one fixed address (a port, a socket file) gets
// EADDRINUSE the second time, and its first listener goes on as if nothing
// happened: it serves, and its Close releases the address.
func TestListenTwiceInOneWorker(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets {
				t.Run(nc.name, func(t *testing.T) {
					lnUsePolicy(t, p)
					lnCheckFDs(t)
					asked := lnFixed(t, nc.network, nc.address(t))
					w := lnStart(t, nc.network, asked, "twice")
					if rep := w.mb.wait(t, "second").rep; !rep.InUse {
						t.Errorf("second Listen(%q, %q) in one worker: %q at %q, want EADDRINUSE", nc.network, asked, rep.Err, rep.Addr)
					}
					other := lnStart(t, nc.network, asked)
					tg := lnTargetFor(nc, w.ready.Addr)
					lnUntilAll(t, tg, []int{w.ID(), other.ID()}, 3000)
					w.ask(t, "close", "closed")
					lnUntilAll(t, tg, []int{other.ID()}, 20)
					other.ask(t, "close", "closed")
					if sa := lnSharedAddr(nc.network, asked); sa != nil {
						t.Errorf("the primary still has its %s server for %s %s after every listener closed", sa.mode, nc.network, asked)
					}
					if nc.network == "unix" {
						if _, err := os.Stat(asked); !errors.Is(err, os.ErrNotExist) {
							t.Errorf("socket file after every listener closed: %v, want it removed", err)
						}
					}
				})
			}
		})
	}
}

// TestListenWorkerDisconnect: Worker.Disconnect on a serving worker stops new
// connections to it; it keeps serving the connection it holds, and exits once
// the client closes that.
func TestListenWorkerDisconnect(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			lnCheckFDs(t)
			nc := lnNets[0]
			asked := nc.address(t)
			ws := lnStartN(t, 2, nc.network, asked)
			leaving, staying := ws[0], ws[1]
			addr := leaving.ready.Addr

			// A keep-alive connection served by the worker that will leave.
			var held net.Conn
			var br *bufio.Reader
			for i := 0; held == nil; i++ {
				if i == 1000 {
					t.Fatalf("no connection of %d reached worker %d", i, leaving.ID())
				}
				c := lnKeepAlive(t, addr)
				r, cbr := lnKeepAliveRequest(t, c, nil)
				if r.id == leaving.ID() {
					held, br = c, cbr
				} else {
					c.Close()
				}
			}

			if err := leaving.Disconnect(); err != nil {
				t.Fatal(err)
			}
			if rep := leaving.mb.wait(t, "serve-ended"); !rep.rep.ErrClosed {
				t.Errorf("worker %d: Accept after Disconnect returned %q, want net.ErrClosed", leaving.ID(), rep.rep.Err)
			}
			tg := lnTargetFor(nc, addr)
			lnUntilAll(t, tg, []int{staying.ID()}, 20)

			// Still there for the connection it holds, which it waits for.
			if rep := leaving.ask(t, "inflight", "inflight"); rep.N != 1 {
				t.Errorf("worker %d waits for %d connections to close, want 1: the one held open", leaving.ID(), rep.N)
			}
			if r, _ := lnKeepAliveRequest(t, held, br); r.id != leaving.ID() {
				t.Errorf("the held connection was answered by worker %d, want %d", r.id, leaving.ID())
			}
			select {
			case <-leaving.Done():
				t.Fatalf("worker %d exited while a connection it accepted was open", leaving.ID())
			default:
			}
			held.Close()
			waitDone(t, leaving.Worker)
			if !leaving.ExitedAfterDisconnect() {
				t.Error("ExitedAfterDisconnect() = false after Disconnect")
			}
			lnUntilAll(t, tg, []int{staying.ID()}, 5)
		})
	}
}

func lnKeepAlive(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

// lnKeepAliveRequest makes an HTTP/1.1 request that keeps c open.
func lnKeepAliveRequest(t testing.TB, c net.Conn, br *bufio.Reader) (lnReply, *bufio.Reader) {
	t.Helper()
	if br == nil {
		br = bufio.NewReader(c)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: cn\r\n\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	r, err := lnReadReply(c, br, "*net.TCPConn")
	if err != nil {
		t.Fatalf("keep-alive request: %v", err)
	}
	return r, br
}

// lnFixed turns a port-0 address into one with a port that was free a
// moment ago; a socket path stays.
func lnFixed(t testing.TB, network, address string) string {
	t.Helper()
	if network == "unix" {
		return address
	}
	var c io.Closer
	var a net.Addr
	if lnIsPacket(network) {
		pc, err := net.ListenPacket(network, address)
		if err != nil {
			t.Fatal(err)
		}
		c, a = pc, pc.LocalAddr()
	} else {
		ln, err := net.Listen(network, address)
		if err != nil {
			t.Fatal(err)
		}
		c, a = ln, ln.Addr()
	}
	c.Close()
	return a.String()
}

// TestListenIndexPortZero: as in Node (test-cluster-child-index-net,
// -child-index-dgram, test-cluster-disconnect), a worker's listens on port
// 0 are numbered: two in one worker get two ports, and the nth listen of
// every worker shares one. Once a worker closes its listens on an address,
// its numbering starts over.
func TestListenIndexPortZero(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets {
				if nc.network == "unix" {
					continue // a socket file has no port 0
				}
				t.Run(nc.name, func(t *testing.T) {
					lnUsePolicy(t, p)
					lnCheckFDs(t)
					asked := nc.address(t)
					a := lnStart(t, nc.network, asked, "twice")
					b := lnStart(t, nc.network, asked, "twice")
					a2, b2 := a.mb.wait(t, "second").rep, b.mb.wait(t, "second").rep
					if a2.Err != "" || b2.Err != "" {
						t.Fatalf("second listens on %s: %q, %q; want both to succeed", asked, a2.Err, b2.Err)
					}
					if a.ready.Addr != b.ready.Addr || a2.Addr != b2.Addr {
						t.Errorf("first listens at %s and %s, second at %s and %s: want the nth listen of each worker on one port", a.ready.Addr, b.ready.Addr, a2.Addr, b2.Addr)
					}
					if a.ready.Addr == a2.Addr {
						t.Errorf("both listens of worker %d at %s: want two ports", a.ID(), a2.Addr)
					}
					tg := lnTargetFor(nc, a.ready.Addr)
					lnUntilAll(t, tg, []int{a.ID(), b.ID()}, 3000)
					a.ask(t, "close", "closed")
					b.ask(t, "close", "closed")
				})
			}
		})
	}
}
