//go:build unix

package clusternet

// Shared: descriptors as handles on Unix: copies, and turning received ones
// into connections, listeners and packet connections.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dupHandle returns a close-on-exec duplicate of h's descriptor, taken
// through SyscallConn so that h keeps its blocking mode.
func dupHandle(h any) (sysHandle, error) {
	sc, ok := h.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%w: a %T has no descriptor to send", ErrInvalidHandle, h)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("%w: %v", ErrInvalidHandle, err)
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("%w: %v", ErrInvalidHandle, err)
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return nfd, nil
}

// fileFromHandle wraps a received descriptor in an *os.File.
func fileFromHandle(h sysHandle, name string) *os.File {
	return os.NewFile(uintptr(h), name)
}

// connFromHandle turns a received connection descriptor into a net.Conn
// (a *net.TCPConn or *net.UnixConn), taking ownership of it. net.FileConn
// duplicates h: if that fails for want of a slot and the worker's recvConn
// lent h a reserve (child_rr_unix.go), the reserve is closed and the dup
// tried again.
func connFromHandle(h sysHandle) (net.Conn, error) {
	f := os.NewFile(uintptr(h), "conn")
	defer f.Close()
	c, err := net.FileConn(f)
	if errors.Is(err, syscall.EMFILE) && rrReserve.spend(h) {
		c, err = net.FileConn(f)
	}
	rrReserve.settle(h) // before f.Close
	return c, err
}

// listenerFromHandle turns a received listening socket into a net.Listener,
// taking ownership of it.
func listenerFromHandle(h *sysHandle) (net.Listener, error) {
	if h == nil {
		return nil, protocolErrorf("the primary shared no socket")
	}
	f := os.NewFile(uintptr(*h), "listener")
	defer f.Close()
	return net.FileListener(f)
}

// packetConnFromHandle turns a received datagram socket into a
// net.PacketConn, taking ownership of it.
func packetConnFromHandle(h *sysHandle) (net.PacketConn, error) {
	if h == nil {
		return nil, protocolErrorf("the primary shared no socket")
	}
	f := os.NewFile(uintptr(*h), "packetconn")
	defer f.Close()
	return net.FilePacketConn(f)
}
