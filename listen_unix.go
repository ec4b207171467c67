//go:build unix

package clusternet

// Shared: socket options of the listening API on Unix.

import (
	"net"
	"os"
	"syscall"

	"github.com/libp2p/go-reuseport"
	"golang.org/x/sys/unix"
)

var reusePortControl = reuseport.Control

// setBacklog sets the listen queue length of a listening socket: listen(2)
// on a socket that already listens only changes it.
func setBacklog(ln net.Listener, backlog int) error {
	if backlog <= 0 {
		return nil
	}
	rc, err := rawConn(ln)
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) }); err != nil {
		return err
	}
	return os.NewSyscallError("listen", lerr)
}

// reuseAddrControl sets SO_REUSEADDR (ListenConfig.ReuseAddr).
func reuseAddrControl(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}
