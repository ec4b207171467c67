package clusternet

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

// TestListenBindError: an address the primary cannot bind fails the worker's
// Listen with the bind error itself, and leaves nothing behind in the primary.
func TestListenBindError(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets {
				t.Run(nc.name, func(t *testing.T) {
					lnUsePolicy(t, p)
					testListenBindError(t, nc, nil)
				})
			}
		})
	}
	t.Run("reuseport-option", func(t *testing.T) {
		require(t, "reuseport")
		for _, nc := range lnNets {
			if nc.network == "unix" {
				continue
			}
			t.Run(nc.name, func(t *testing.T) { testListenBindError(t, nc, []string{"reuseport"}) })
		}
	})
}

func testListenBindError(t *testing.T, nc lnNetCase, opts []string) {
	asked := nc.address(t)
	var taken string
	if lnIsPacket(nc.network) {
		pc, err := net.ListenPacket(nc.network, asked)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		taken = pc.LocalAddr().String()
	} else {
		ln, err := net.Listen(nc.network, asked)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		taken = ln.Addr().String()
	}
	rep := lnListenError(t, nc.network, taken, opts...)
	if !rep.InUse {
		t.Errorf("Listen(%q, %q) in a worker: %s; want errors.Is(err, syscall.EADDRINUSE)", nc.network, taken, rep.Err)
	}
	if sa := lnSharedAddr(nc.network, taken); sa != nil {
		t.Errorf("the primary kept a %s server for %s %s after the bind failed", sa.mode, nc.network, taken)
	}
}

// TestListenPrivilegedPort: a port the primary may not bind fails the
// worker's Listen with EACCES.
func TestListenPrivilegedPort(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("the primary runs as root and may bind any port")
	}
	const addr = "127.0.0.1:1"
	if ln, err := net.Listen("tcp4", addr); err == nil {
		ln.Close()
		t.Skip("this machine lets unprivileged processes bind port 1")
	} else if !errors.Is(err, syscall.EACCES) {
		t.Skipf("binding %s in the primary fails with %v, not EACCES", addr, err)
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			rep := lnListenError(t, "tcp4", addr)
			if !rep.Access {
				t.Errorf("Listen(%q) in a worker: %s; want errors.Is(err, syscall.EACCES)", addr, rep.Err)
			}
		})
	}
}
