//go:build windows

package clusternet

// Shared: handles on Windows: copies, and turning received sockets into
// connections, listeners and packet connections.

import (
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/windows"
)

// dupHandle returns this process's own duplicate of h's handle, for the
// channel to export to the peer and then close. h is left as it is: its
// handle is taken through SyscallConn, not Fd, which would take a socket
// off the runtime's completion port.
func dupHandle(h any) (sysHandle, error) {
	sc, ok := h.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("%w: a %T has no handle to send", ErrInvalidHandle, h)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidHandle, err)
	}
	var nh sysHandle
	var derr error
	if err := rc.Control(func(fd uintptr) { nh, derr = duplicate(windows.Handle(fd)) }); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidHandle, err)
	}
	return nh, derr
}

// duplicate returns a second, non-inheritable handle to what h refers to.
// Sockets are duplicated through Winsock, as the net package does, so that
// the copy is a socket Winsock knows in this process.
func duplicate(h windows.Handle) (windows.Handle, error) {
	if isSocket(h) {
		var info windows.WSAProtocolInfo
		if err := windows.WSADuplicateSocket(h, windows.GetCurrentProcessId(), &info); err != nil {
			return 0, os.NewSyscallError("WSADuplicateSocket", err)
		}
		s, err := windows.WSASocket(-1, -1, -1, &info, 0, windows.WSA_FLAG_OVERLAPPED|windows.WSA_FLAG_NO_HANDLE_INHERIT)
		if err != nil {
			return 0, os.NewSyscallError("WSASocket", err)
		}
		return s, nil
	}
	self := windows.CurrentProcess()
	var nh windows.Handle
	if err := windows.DuplicateHandle(self, h, self, &nh, 0, false, windows.DUPLICATE_SAME_ACCESS); err != nil {
		return 0, os.NewSyscallError("DuplicateHandle", err)
	}
	return nh, nil
}

// fileFromHandle wraps a received handle.
func fileFromHandle(h sysHandle, name string) *os.File {
	return os.NewFile(uintptr(h), name)
}

// connFromHandle turns a received connected socket into a net.Conn, taking
// ownership of it. net.FileConn cannot be used: it would move the socket
// from the sender's completion port to this process's, which breaks a copy
// the sender kept (KeepOpen), and Wine cannot move it at all.
func connFromHandle(h sysHandle) (net.Conn, error) {
	return newSocketConn(os.NewFile(uintptr(h), "conn"), h)
}

// listenerFromHandle turns a received listening socket into a net.Listener,
// taking ownership of it. The socket is shared with the primary and the
// other workers, so it cannot join this process's completion port as
// net.FileListener would have it: see pollListener.
func listenerFromHandle(h *sysHandle) (net.Listener, error) {
	if h == nil {
		return nil, protocolErrorf("the primary shared no socket")
	}
	return newPollListener(*h)
}

// packetConnFromHandle turns a received datagram socket into a
// net.PacketConn, taking ownership of it; see pollPacketConn.
func packetConnFromHandle(h *sysHandle) (net.PacketConn, error) {
	if h == nil {
		return nil, protocolErrorf("the primary shared no socket")
	}
	return newPollPacketConn(*h)
}
