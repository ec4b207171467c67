package clusternet

// Shared: socket options of the listening API on Windows.

import (
	"net"
	"os"
	"syscall"

	"github.com/libp2p/go-reuseport"
	"golang.org/x/sys/windows"
)

// reusePortControl sets SO_REUSEADDR, the nearest Windows has to
// SO_REUSEPORT: sockets may bind the same port, but the system does not
// spread connections across them.
var reusePortControl = reuseport.Control

// setBacklog leaves the listen queue as it is: Windows ignores listen on a
// socket that already listens, so the queue keeps the length the net package
// asked for, the system's maximum.
func setBacklog(ln net.Listener, backlog int) error { return nil }

// reuseAddrControl sets SO_REUSEADDR (ListenConfig.ReuseAddr).
func reuseAddrControl(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = windows.SetsockoptInt(windows.Handle(fd), windows.SOL_SOCKET, windows.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}
