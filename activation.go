package clusternet

// Shared: socket activation (systemd's LISTEN_FDS). The primary serves the
// inherited sockets to workers; a program that never forks gets them from
// Listen itself.

import (
	"io"
	"net"
	"strconv"
	"sync"
)

// Socket activation: a primary started by systemd (or anything that follows
// its convention: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES and the sockets as
// descriptors 3, 4, ...) serves those sockets to workers whose Listen asks
// for the same address, instead of binding: the service can have port 80
// without ever running as root. In a process that is not clustered, Listen
// returns the inherited socket itself.

// activatedSocket is one inherited socket.
type activatedSocket struct {
	name  string
	ln    net.Listener   // a stream socket, or
	pc    net.PacketConn // a datagram socket
	inUse bool           // a server or Listen has it
}

var activation struct {
	once    sync.Once
	sockets []*activatedSocket
	mu      sync.Mutex // guards inUse
}

func activatedSockets() []*activatedSocket {
	activation.once.Do(func() { activation.sockets = inheritActivatedSockets() })
	return activation.sockets
}

// takeActivated returns the inherited socket that listens at network and
// address, if there is one not in use, and marks it in use.
func takeActivated(network, address string, packet bool) *activatedSocket {
	socks := activatedSockets()
	if len(socks) == 0 {
		return nil
	}
	activation.mu.Lock()
	defer activation.mu.Unlock()
	for _, s := range socks {
		if s.inUse || (s.pc != nil) != packet {
			continue
		}
		if addrMatches(network, address, s.localAddr()) {
			s.inUse = true
			return s
		}
	}
	return nil
}

// conn returns the socket.
func (s *activatedSocket) conn() io.Closer {
	if s.ln != nil {
		return s.ln
	}
	return s.pc
}

func (s *activatedSocket) localAddr() net.Addr {
	if s.ln != nil {
		return s.ln.Addr()
	}
	return s.pc.LocalAddr()
}

// release makes an activated socket available again: it is never closed,
// since it could not be had back.
func (s *activatedSocket) release() {
	activation.mu.Lock()
	s.inUse = false
	activation.mu.Unlock()
}

// addrMatches reports whether a socket bound at local serves a Listen of
// network and address: the same path, or the same port and either the same
// IP or both the wildcard.
func addrMatches(network, address string, local net.Addr) bool {
	switch a := local.(type) {
	case *net.UnixAddr:
		return network == "unix" && a.Name == address
	case *net.TCPAddr:
		return matchesIP(network, address, "tcp", a.IP, a.Port)
	case *net.UDPAddr:
		return matchesIP(network, address, "udp", a.IP, a.Port)
	}
	return false
}

func matchesIP(network, address, family string, ip net.IP, port int) bool {
	if len(network) < 3 || network[:3] != family {
		return false
	}
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if p, err := strconv.Atoi(portText); err != nil || p != port || p == 0 {
		return false
	}
	want := net.ParseIP(host)
	if host == "" || want != nil && want.IsUnspecified() {
		return ip.IsUnspecified()
	}
	return want != nil && want.Equal(ip)
}
