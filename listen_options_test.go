package clusternet

// ListenConfig: Backlog, Exclusive, ReusePort.

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestListenBacklog: ListenConfig.Backlog reaches the listening socket,
// wherever it is bound.
func TestListenBacklog(t *testing.T) {
	ctl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	rc, _ := ctl.(*net.TCPListener).SyscallConn()
	if err := setBacklog(ctl, 5); err != nil {
		t.Fatal(err)
	}
	if n, err := lnBacklog(rc); err != nil || n != 5 {
		t.Skipf("the backlog of a listening socket is not observable here (%d, %v)", n, err)
	}
	const backlog = 7
	check := func(t *testing.T, opts ...string) {
		w := lnStart(t, "tcp4", "127.0.0.1:0", append(opts, "backlog="+strconv.Itoa(backlog))...)
		var n int
		if sa := lnSharedAddr("tcp4", "127.0.0.1:0"); sa != nil && sa.sock != nil && !slices.Contains(opts, "exclusive") {
			// The primary's socket (round-robin).
			rc, err := sa.sock.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if n, err = lnBacklog(rc); err != nil {
				t.Fatal(err)
			}
		} else {
			rep := w.ask(t, "backlog", "backlog")
			if rep.Unsup {
				t.Skip("the backlog is not observable here")
			}
			if rep.Err != "" {
				t.Fatalf("worker %d: %s", w.ID(), rep.Err)
			}
			n = rep.N
		}
		if n != backlog {
			t.Errorf("listen backlog %d, want %d", n, backlog)
		}
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			check(t)
		})
	}
	t.Run("exclusive", func(t *testing.T) { check(t, "exclusive") })
	t.Run("reuseport-option", func(t *testing.T) {
		require(t, "reuseport")
		check(t, "reuseport")
	})
}

// TestListenExclusive: ListenConfig.Exclusive binds in the worker itself,
// without the primary; the address is not shared.
func TestListenExclusive(t *testing.T) {
	nc := lnNets[0]
	w := lnStart(t, "tcp4", "127.0.0.1:0", "exclusive")
	lnCheckAddr(t, "tcp4", "127.0.0.1:0", w.ready.Addr)
	if a := w.mb.wait(t, "listening").addr; a.String() != w.ready.Addr || a.Type != TCP4 {
		t.Errorf("listening event for %+v, want %s", a, w.ready.Addr)
	}
	cluster.mu.Lock()
	for id, sa := range cluster.addrs {
		if _, addr, _ := cutNetwork(sa.boundAt); addr == w.ready.Addr || strings.HasSuffix(id, w.ready.Addr) {
			t.Errorf("the primary has a server %q bound at %q for an exclusive listener", id, sa.boundAt)
		}
	}
	cluster.mu.Unlock()

	tg := lnTargetFor(nc, w.ready.Addr)
	lnUntilAll(t, tg, []int{w.ID()}, 5)

	// Not shared: another worker asking for the same address exclusively
	// cannot bind it.
	rep := lnListenError(t, "tcp4", w.ready.Addr, "exclusive")
	if !rep.InUse {
		t.Errorf("a second exclusive Listen on %s: %s; want EADDRINUSE", w.ready.Addr, rep.Err)
	}

	if rep := w.ask(t, "close", "closed"); rep.CloseErr != "" || !rep.ErrClosed {
		t.Errorf("Close returned %q; the blocked Accept returned %q, want net.ErrClosed", rep.CloseErr, rep.Err)
	}
	if c, err := net.Dial("tcp4", w.ready.Addr); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the exclusive listener's Close", w.ready.Addr)
	}
}

// TestListenReusePortOption: ListenConfig.ReusePort gives each worker its own
// SO_REUSEPORT socket on one port, whatever the policy; with Exclusive the
// workers bind those sockets themselves.
func TestListenReusePortOption(t *testing.T) {
	require(t, "reuseport")
	run := func(t *testing.T, nc lnNetCase, opts ...string) {
		asked := nc.address(t)
		first := lnStart(t, nc.network, asked, opts...)
		addr := asked
		if slices.Contains(opts, "exclusive") {
			addr = first.ready.Addr // nobody shares the port 0 for them
		}
		ws := []*lnWorker{first, lnStart(t, nc.network, addr, opts...)}
		if ws[1].ready.Addr != first.ready.Addr {
			t.Errorf("workers listen at %s and %s, want one address", first.ready.Addr, ws[1].ready.Addr)
		}
		if !slices.Contains(opts, "exclusive") {
			if sa := lnSharedAddr(nc.network, asked); sa == nil || sa.mode != modeOwn {
				t.Errorf("the primary's server for %s %s: %+v, want mode %q", nc.network, asked, sa, modeOwn)
			}
		}
		for _, w := range ws {
			if rep := w.ask(t, "reuseport", "reuseport"); !rep.Unsup && (rep.Err != "" || rep.N != 1) {
				t.Errorf("worker %d: SO_REUSEPORT = %d (%s), want it set", w.ID(), rep.N, rep.Err)
			}
		}
		lnUntilAll(t, lnTargetFor(nc, first.ready.Addr), lnIDs(ws), 3000)
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range []lnNetCase{lnNets[0], lnNets[3]} {
				t.Run(nc.name, func(t *testing.T) {
					lnUsePolicy(t, p)
					run(t, nc, "reuseport")
				})
			}
		})
	}
	t.Run("exclusive", func(t *testing.T) {
		for _, nc := range []lnNetCase{lnNets[0], lnNets[3]} {
			t.Run(nc.name, func(t *testing.T) { run(t, nc, "reuseport", "exclusive") })
		}
	})
}
