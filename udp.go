package clusternet

import (
	"context"
	"net"
)

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
	switch network {
	case "udp", "udp4", "udp6":
	default:
		if Self() != nil { // outside a worker this is net.ListenPacket, which decides
			return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
		}
	}
	w := Self()
	if w == nil {
		if s := takeActivated(network, address, true); s != nil {
			return s.pc, nil
		}
	}
	if w == nil || lc.Exclusive {
		nlc := lc.ListenConfig
		if lc.ReusePort {
			nlc.Control = chainControl(reusePortControl, nlc.Control)
		}
		pc, err := nlc.ListenPacket(ctx, network, address)
		if err != nil || w == nil {
			return pc, err
		}
		w.reportListening(addressOf(network, pc.LocalAddr()))
		return w.listeners.trackPacket(pc, 0), nil
	}
	rep, h, err := w.listeners.request(ctx, w, listenRequest{Network: network, Address: address, ReusePort: lc.ReusePort, Packet: true})
	if err != nil {
		return nil, err
	}
	pc, err := packetConnFromHandle(h)
	if err != nil {
		w.listeners.unlisten(w, rep.Key)
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	w.reportListening(addressOf(network, pc.LocalAddr()))
	return w.listeners.trackPacket(pc, rep.Key), nil
}

// trackPacket registers a packet connection so that Disconnect closes it.
// The result is a *UDPConn, which has every method of *net.UDPConn.
func (s *listenerSet) trackPacket(pc net.PacketConn, key uint32) net.PacketConn {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		c := &trackedPacketConn{PacketConn: pc, membership: membership{set: s, key: key}}
		s.add(c)
		return c
	}
	c := &UDPConn{UDPConn: uc, membership: membership{set: s, key: key}}
	s.add(c)
	return c
}

// trackedPacketConn does for any other packet connection what UDPConn does
// for a *net.UDPConn. On Windows a socket that the primary shares with other
// workers is one: the net package cannot adopt it.
type trackedPacketConn struct {
	net.PacketConn
	membership
}

func (c *trackedPacketConn) Close() error {
	err := c.PacketConn.Close()
	c.leave(c)
	return err
}

// UDPConn is a worker's UDP socket shared through the primary: a
// *net.UDPConn whose Close also tells the primary, which closes its socket
// once no worker uses it.
type UDPConn struct {
	*net.UDPConn
	membership
}

// Close closes the worker's socket and leaves the primary's to the others.
func (c *UDPConn) Close() error {
	err := c.UDPConn.Close()
	c.leave(c)
	return err
}
