//go:build unix

package clusternet

// Shared: socket options of the listening API on Unix.

import (
	"net"
	"os"

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
