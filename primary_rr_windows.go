//go:build windows

package clusternet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/libp2p/go-reuseport"
)

// reusePortControl sets SO_REUSEADDR, the nearest Windows has to
// SO_REUSEPORT: sockets may bind the same port, but the system does not
// spread connections across them.
var reusePortControl = reuseport.Control

// bindStream binds a listening socket in the primary; the net package
// removes a Unix socket's file when the listener closes.
func bindStream(network, address string, backlog int, reuse bool) (net.Listener, error) {
	lc := ListenConfig{Backlog: backlog}
	return lc.bind(context.Background(), network, address, reuse)
}

// bindPacket binds a UDP socket in the primary.
func bindPacket(network, address string, reuse bool) (net.PacketConn, error) {
	var lc net.ListenConfig
	if reuse {
		lc.Control = reusePortControl
	}
	return lc.ListenPacket(context.Background(), network, address)
}

// setBacklog leaves the listen queue as it is: Windows ignores listen on a
// socket that already listens, so the queue keeps the length the net package
// asked for, the system's maximum.
func setBacklog(ln net.Listener, backlog int) error { return nil }

// Round-robin handoff (rr.go) is never done on Windows: SchedRR is
// SchedNone there (see Policy.effective), as in Node. These functions only
// say so.
var errNoHandoff = fmt.Errorf("clusternet: round-robin handoff on Windows: %w", errors.ErrUnsupported)

func acceptBatch(rc syscall.RawConn, limit int) ([]sysHandle, error) { return nil, errNoHandoff }

func newHandoff() (out, peer sysHandle, err error) { return 0, 0, errNoHandoff }

func dupFD(fd sysHandle) (sysHandle, error) { return 0, errNoHandoff }

func sendConns(out sysHandle, conns []sysHandle, records []byte) (int, error) { return 0, errNoHandoff }

func queuedConns(peer sysHandle) (int, error) { return 0, errNoHandoff }

func recvQueued(peer sysHandle) []sysHandle { return nil }

func handoffConn(h sysHandle) (*net.UnixConn, error) { return nil, errNoHandoff }

func recvConn(c *net.UnixConn) (h sysHandle, last bool, err error) { return 0, false, errNoHandoff }
