package clusternet

// Node's tests of the ipv6Only option: test-cluster-dgram-ipv6only,
// test-cluster-net-listen-ipv6only-false, and test/sequential's
// test-cluster-net-listen-ipv6only-none and -rr.
//
// Go has no ipv6Only option: the network name says it. On the wildcard
// address "[::]", "tcp6" and "udp6" bind with IPV6_V6ONLY set (Node's
// ipv6Only: true) and "tcp" and "udp" with it cleared (dual stack, Node's
// default); the primary binds with the worker's network (primary_bind.go,
// ListenConfig.bind, net.ListenConfig), so a worker's Listen("tcp6", "[::]:p")
// leaves IPv4's port p free and Listen("tcp", "[::]:p") takes it too.
//
// The option matters only on the wildcard address, and the tests talk to
// loopback only: each test runs its primary (the role node-ipv6only) in a
// network namespace of its own whose only interface is loopback, which the
// primary brings up. Making one needs root (CI runs as root). The primary
// says "fail: why" for each failed assertion, "skip: why" if the namespace
// has no IPv6 (Node's common.hasIPv6), and "done" at the end.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nodeIPv6Port is Node's common.PORT for the -none and -rr tests: a fixed
// port, free in a namespace of its own.
const nodeIPv6Port = 12346

func init() {
	primaries["node-ipv6only"] = nodeIPv6OnlyPrimary
	// node-ipv6-listen listens on NODE_NET NODE_ADDR, takes and closes
	// connections, and leaves when the primary disconnects it.
	helpers["node-ipv6-listen"] = func() {
		ln, err := Listen(os.Getenv("NODE_NET"), os.Getenv("NODE_ADDR"))
		nodeCheck(err == nil, "Listen(%s, %s): %v", os.Getenv("NODE_NET"), os.Getenv("NODE_ADDR"), err)
		for {
			c, err := ln.Accept()
			if err != nil {
				select {}
			}
			c.Close()
		}
	}
	// node-ipv6-dgram is test-cluster-dgram-ipv6only's worker: a udp6
	// socket on [::]:0 (Node: type udp6, ipv6Only), then a udp4 one on
	// 0.0.0.0 at the same port, both without error; it closes both and
	// disconnects.
	helpers["node-ipv6-dgram"] = func() {
		pc1, err := ListenPacket("udp6", "[::]:0")
		nodeCheck(err == nil, "ListenPacket(udp6, [::]:0): %v", err)
		port := pc1.LocalAddr().(*net.UDPAddr).Port
		pc2, err := ListenPacket("udp4", "0.0.0.0:"+strconv.Itoa(port))
		nodeCheck(err == nil, "ListenPacket(udp4, 0.0.0.0:%d) beside an IPv6-only socket: %v", port, err)
		nodeCheck(pc1.Close() == nil && pc2.Close() == nil, "closing the sockets")
		Self().Disconnect()
		select {}
	}
}

// loopbackUp brings up the interface lo (SIOCSIFFLAGS), in a network
// namespace where nothing else has.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS lo: %w", err)
	}
	return nil
}

// nodeIPv6OnlyPrimary is the primary of NODE_IPV6_CASE: dgram, false, none
// or rr.
func nodeIPv6OnlyPrimary() {
	defer fmt.Println("done")
	fail := func(format string, args ...any) { fmt.Printf("fail: "+format+"\n", args...) }
	if err := loopbackUp(); err != nil {
		fail("bringing up lo: %v", err)
		return
	}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		fmt.Println("skip: no IPv6 support in the namespace:", err)
		return
	} else {
		ln.Close()
	}
	name := os.Getenv("NODE_IPV6_CASE")
	var (
		helper       = "node-ipv6-listen"
		count        = 3
		network, adr string
	)
	switch name {
	case "dgram":
		helper, count = "node-ipv6-dgram", 1
	case "false":
		// ipv6Only not true: dual stack.
		network, adr = "tcp", "[::]:0"
	case "none", "rr":
		policy := map[string]Policy{"none": SchedNone, "rr": SchedRR}[name]
		if err := SetSchedulingPolicy(policy); err != nil {
			fail("SetSchedulingPolicy(%v): %v", policy, err)
			return
		}
		// ipv6Only: true, on Node's fixed common.PORT.
		network, adr = "tcp6", "[::]:"+strconv.Itoa(nodeIPv6Port)
	default:
		fail("no case %q", name)
		return
	}
	type listening struct {
		w *Worker
		a Address
	}
	listened := make(chan listening, 2*count)
	OnListening(func(w *Worker, a Address) {
		select {
		case listened <- listening{w, a}:
		default: // never block the events
		}
	})
	var workers []*Worker
	for range count {
		w, err := Fork(envHelper+"="+helper, "NODE_NET="+network, "NODE_ADDR="+adr)
		if err != nil {
			fail("Fork: %v", err)
			return
		}
		workers = append(workers, w)
	}
	defer func() {
		// Every worker exits with code 0 (Node: the exit handlers'
		// assert.strictEqual(code, 0)).
		for _, w := range workers {
			select {
			case <-w.Done():
				if st := w.exitStatus(); st.Code != 0 || st.Signal != nil {
					fail("worker %d exited with %v, want code 0", w.ID(), st)
				}
			case <-time.After(testTimeout):
				fail("worker %d did not exit", w.ID())
				w.Kill(os.Kill)
				<-w.Done()
			}
		}
	}()
	if name == "dgram" {
		return
	}
	var first Address
	for i := range count {
		select {
		case l := <-listened:
			a := l.a
			switch {
			case i == 0:
				first = a
			case a.Type != first.Type || a.Host != first.Host || a.Port != first.Port:
				fail("worker %d listens at %+v, worker before at %+v", l.w.ID(), a, first)
			}
			if name != "false" && (a.Type != TCP6 || a.Host != "::" || a.Port != nodeIPv6Port) {
				fail("worker %d listens at %+v (type %v), want type 6, host ::, port %d", l.w.ID(), a, a.Type, nodeIPv6Port)
			}
		case <-time.After(testTimeout):
			fail("%d workers of %d listening", i, count)
			for _, w := range workers {
				w.Kill(os.Kill)
			}
			return
		}
	}
	port := strconv.Itoa(first.Port)
	if name == "false" {
		// Node connects to 0.0.0.0: IPv4 reaches the dual-stack socket.
		// Here, to 127.0.0.1 (and, beyond Node, to ::1 too).
		for _, addr := range []string{"127.0.0.1:" + port, "[::1]:" + port} {
			if c, err := net.DialTimeout("tcp", addr, testTimeout); err != nil {
				fail("connecting to %s, with the workers on tcp [::]:%s: %v", addr, port, err)
			} else {
				c.Close()
			}
		}
	} else {
		// Beyond Node: IPv4 does not reach the IPv6-only socket...
		if c, err := net.DialTimeout("tcp4", "127.0.0.1:"+port, testTimeout); !errors.Is(err, syscall.ECONNREFUSED) {
			fail("connecting to 127.0.0.1:%s, with the workers on tcp6 [::]:%s: %v, want ECONNREFUSED", port, port, err)
			if c != nil {
				c.Close()
			}
		}
		// ...and Node's check: the IPv4 wildcard at that port is free.
		if ln, err := net.Listen("tcp4", "0.0.0.0:"+port); err != nil {
			fail("listening on 0.0.0.0:%s beside the workers' IPv6-only socket: %v", port, err)
		} else {
			ln.Close()
		}
	}
	for _, w := range workers {
		w.Disconnect()
	}
}

// nodeIPv6Only runs the primary of case c in a network namespace of its own
// and reports what it says.
func nodeIPv6Only(t *testing.T, c string) {
	netnsPrimary(t, "binds the wildcard address inside a network namespace of its own, where loopback is the only interface", "node-ipv6only", "NODE_IPV6_CASE="+c)
}

// TestNodeDgramIPv6Only is test-cluster-dgram-ipv6only: a worker binds udp6
// [::]:0 IPv6-only, then udp4 0.0.0.0 at the same port, both without error,
// and exits with code 0.
func TestNodeDgramIPv6Only(t *testing.T) { nodeIPv6Only(t, "dgram") }

// TestNodeNetListenIPv6OnlyFalse is test-cluster-net-listen-ipv6only-false:
// three workers listen on tcp [::]:0 (dual stack), all at the same address;
// an IPv4 connection to the port succeeds; they exit with code 0.
func TestNodeNetListenIPv6OnlyFalse(t *testing.T) { nodeIPv6Only(t, "false") }

// TestNodeNetListenIPv6OnlyNone is test-cluster-net-listen-ipv6only-none:
// under SchedNone three workers listen on tcp6 [::]:PORT (IPv6 only), each
// reported as type 6, host ::, PORT; the primary can then listen on
// 0.0.0.0:PORT (and, beyond Node, an IPv4 connection to the port is
// refused); they exit with code 0.
func TestNodeNetListenIPv6OnlyNone(t *testing.T) { nodeIPv6Only(t, "none") }

// TestNodeNetListenIPv6OnlyRR is test-cluster-net-listen-ipv6only-rr: the
// same under SchedRR.
func TestNodeNetListenIPv6OnlyRR(t *testing.T) { nodeIPv6Only(t, "rr") }
