package clusternet

// Shared: the public listening API (Listen, ListenPacket, ListenConfig,
// Address). Outside a worker it is net.Listen; in a worker it asks the
// primary (child_listen.go).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// AddressType is the kind of address a worker listens on, as Node's
// addressType.
type AddressType int

const (
	Unix AddressType = -1 // a Unix domain socket
	TCP4 AddressType = 4
	TCP6 AddressType = 6
	UDP4 AddressType = 14 // the UDP values have no numeric meaning in Node
	UDP6 AddressType = 16
)

// String returns Node's name: "4", "6", "-1", "udp4" or "udp6".
func (t AddressType) String() string {
	switch t {
	case Unix:
		return "-1"
	case TCP4:
		return "4"
	case TCP6:
		return "6"
	case UDP4:
		return "udp4"
	case UDP6:
		return "udp6"
	}
	return "AddressType(" + strconv.Itoa(int(t)) + ")"
}

// Address is where a worker listens, as reported by the listening event.
type Address struct {
	Network string      // as given to Listen: "tcp", "tcp4", "unix", "udp"...
	Host    string      // the IP address, or the socket path for Unix sockets
	Port    int         // 0 for Unix sockets
	Type    AddressType // TCP4, TCP6, Unix, UDP4 or UDP6
}

// String returns host:port, or the path of a Unix socket.
func (a Address) String() string {
	if a.Type == Unix {
		return a.Host
	}
	return net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

func addressOf(network string, a net.Addr) Address {
	addr := Address{Network: network}
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, addr.Port = a.IP, a.Port
		addr.Type = TCP6
		if ip.To4() != nil {
			addr.Type = TCP4
		}
	case *net.UDPAddr:
		ip, addr.Port = a.IP, a.Port
		addr.Type = UDP6
		if ip.To4() != nil {
			addr.Type = UDP4
		}
	case *net.UnixAddr:
		addr.Host, addr.Type = a.Name, Unix
		return addr
	}
	if ip == nil {
		ip = net.IPv6unspecified
	}
	addr.Host = ip.String()
	return addr
}

// ListenConfig is net.ListenConfig with the cluster's options, as Node's
// server.listen options.
type ListenConfig struct {
	net.ListenConfig // Control runs where the socket is bound; KeepAlive applies to accepted connections

	// Exclusive binds the socket in this process, bypassing the primary
	// (Node's exclusive): it is not shared with other workers.
	Exclusive bool

	// ReusePort binds this listener's socket with SO_REUSEPORT, one socket
	// per worker whatever the scheduling policy (Node's reusePort).
	ReusePort bool

	// ReuseAddr binds a UDP socket with SO_REUSEADDR (Node's dgram
	// reuseAddr): sockets that all set it may bind the same address and
	// port, in one worker or several. In a worker each such ListenPacket
	// gets a socket of its own from the primary, as in Node. Listen ignores
	// it: Go sets SO_REUSEADDR on every TCP listener on Unix already.
	ReuseAddr bool

	// Backlog is the listen queue length; 0 means the system's default.
	Backlog int
}

// Listen is net.Listen for the cluster. Outside a worker (in the primary, or
// a program that is not clustered) it is net.Listen. In a worker the primary
// owns the socket for network and address, shared by every worker that
// listens there (so ":0" gives all of them the same port), and distributes
// its connections according to the scheduling policy. Networks: tcp, tcp4,
// tcp6, unix. An error binding in the primary is returned as the same error
// (errors.Is(err, syscall.EADDRINUSE)).
func Listen(network, address string) (net.Listener, error) {
	var lc ListenConfig
	return lc.Listen(context.Background(), network, address)
}

// Listen is the package-level Listen with lc's options; ctx bounds the wait
// for the primary.
func (lc *ListenConfig) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	w := Self()
	if w == nil {
		if s := takeActivated(network, address, false); s != nil {
			return s.ln, nil
		}
		return lc.bind(ctx, network, address, lc.ReusePort)
	}
	if err := checkListenNetwork(network, false); err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return w.listenSelf(ctx, lc, network, address)
}

// bind binds in this process.
func (lc *ListenConfig) bind(ctx context.Context, network, address string, reuse bool) (net.Listener, error) {
	nlc := lc.ListenConfig
	if reuse {
		nlc.Control = chainControl(reusePortControl, nlc.Control)
	}
	ln, err := nlc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if err := setBacklog(ln, lc.Backlog); err != nil {
		ln.Close()
		return nil, &net.OpError{Op: "listen", Net: network, Addr: ln.Addr(), Err: err}
	}
	return ln, nil
}

func chainControl(a, b func(string, string, syscall.RawConn) error) func(string, string, syscall.RawConn) error {
	if b == nil {
		return a
	}
	return func(network, address string, c syscall.RawConn) error {
		if err := a(network, address, c); err != nil {
			return err
		}
		return b(network, address, c)
	}
}

func isClosedListenErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed)
}

// rawConn returns the listener's descriptor for the accept loop.
func rawConn(ln net.Listener) (syscall.RawConn, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("clusternet: %T has no descriptor", ln)
	}
	return sc.SyscallConn()
}

// ListenPacket is net.ListenPacket for the cluster. Outside a worker it is
// net.ListenPacket. In a worker the primary binds the address once and
// shares the socket with every worker that asks for it (never round-robin,
// as in Node); with ListenConfig.ReusePort each worker gets its own
// SO_REUSEPORT socket instead. Networks: udp, udp4, udp6.
func ListenPacket(network, address string) (net.PacketConn, error) {
	var lc ListenConfig
	return lc.ListenPacket(context.Background(), network, address)
}

// ListenPacket is the package-level ListenPacket with lc's options.
func (lc *ListenConfig) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	w := Self()
	if w == nil {
		if s := takeActivated(network, address, true); s != nil {
			return s.pc, nil
		}
		return lc.bindPacket(ctx, network, address)
	}
	if err := checkListenNetwork(network, true); err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	return w.listenPacketSelf(ctx, lc, network, address)
}

// bindPacket binds a packet socket in this process.
func (lc *ListenConfig) bindPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	nlc := lc.ListenConfig
	if lc.ReusePort {
		nlc.Control = chainControl(reusePortControl, nlc.Control)
	} else if lc.ReuseAddr {
		nlc.Control = chainControl(reuseAddrControl, nlc.Control)
	}
	return nlc.ListenPacket(ctx, network, address)
}
