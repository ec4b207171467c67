package clusternet

// Shared: socket options of the listening API on Windows.

import (
	"net"

	"github.com/libp2p/go-reuseport"
)

// reusePortControl sets SO_REUSEADDR, the nearest Windows has to
// SO_REUSEPORT: sockets may bind the same port, but the system does not
// spread connections across them.
var reusePortControl = reuseport.Control

// setBacklog leaves the listen queue as it is: Windows ignores listen on a
// socket that already listens, so the queue keeps the length the net package
// asked for, the system's maximum.
func setBacklog(ln net.Listener, backlog int) error { return nil }
