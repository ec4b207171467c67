package clusternet

// Runs in the primary: binding the sockets it shares with workers, or binds
// for one of them (socket files: primary_bind_unix.go).

import (
	"context"
	"net"
)

// bindStream binds a listening socket in the primary: TCP, or a Unix
// socket with an abstract name (socket files: bindSocketFile).
func bindStream(network, address string, backlog int, reuse bool) (net.Listener, error) {
	lc := ListenConfig{Backlog: backlog}
	return lc.bind(context.Background(), network, address, reuse)
}

// bindPacket binds a UDP socket in the primary, with SO_REUSEPORT (reuse)
// or SO_REUSEADDR (reuseAddr).
func bindPacket(network, address string, reuse, reuseAddr bool) (net.PacketConn, error) {
	lc := ListenConfig{ReusePort: reuse, ReuseAddr: reuseAddr}
	return lc.bindPacket(context.Background(), network, address)
}
