//go:build unix

package clusternet

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/libp2p/go-reuseport"
	"golang.org/x/sys/unix"
)

var reusePortControl = reuseport.Control

// bindStream binds a listening socket in the primary: TCP, or a Unix
// socket with an abstract name (socket files: bindSocketFile).
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

// acceptBatch waits for connections on a listening socket and accepts up to
// limit of them without waiting further. The descriptors are not registered
// with the runtime's poller: they are only passed on.
func acceptBatch(rc syscall.RawConn, limit int) ([]sysHandle, error) {
	var hs []sysHandle
	var aerr error
	err := rc.Read(func(fd uintptr) bool {
		for len(hs) < limit {
			nfd, err := accept(int(fd))
			switch err {
			case nil:
				hs = append(hs, nfd)
				continue
			case unix.EINTR, unix.ECONNABORTED:
				continue
			case unix.EAGAIN:
				return len(hs) > 0 // nothing accepted yet: wait for readiness
			}
			aerr = os.NewSyscallError("accept", err)
			return true
		}
		return true
	})
	if err == nil {
		err = aerr
	}
	return hs, err
}

// newHandoff makes a handoff socket (see rr.go): out is the primary's end,
// peer the worker's. Both are non-blocking and close-on-exec; out is shut for
// reading, so the worker cannot write to the primary through it.
func newHandoff() (out, peer sysHandle, err error) {
	fds, err := rawSocketPair()
	if err != nil {
		return -1, -1, err
	}
	for _, fd := range fds {
		if err == nil {
			err = os.NewSyscallError("setnonblock", unix.SetNonblock(fd, true))
		}
	}
	if err == nil {
		err = os.NewSyscallError("shutdown", unix.Shutdown(fds[0], unix.SHUT_RD))
	}
	if err != nil {
		closeHandles(fds[:])
		return -1, -1, err
	}
	return fds[0], fds[1], nil
}

// dupFD returns a close-on-exec duplicate of fd.
func dupFD(fd sysHandle) (sysHandle, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}

// queuedConns returns how many connections wait in a handoff socket: its
// unread bytes (FIONREAD), one per record.
func queuedConns(peer sysHandle) (int, error) {
	n, err := unix.IoctlGetInt(peer, ioctlReadable)
	if err != nil {
		return 0, os.NewSyscallError("ioctl", err)
	}
	return n, nil
}

// recvQueued reads every connection left in a handoff socket.
func recvQueued(peer sysHandle) []sysHandle {
	var hs []sysHandle
	b := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4*maxFrameHandles))
	for {
		// The descriptors arrive in this process: close-on-exec before
		// any fork can see them.
		syscall.ForkLock.RLock()
		n, oobn, _, _, err := unix.Recvmsg(peer, b, oob, 0)
		var got []sysHandle
		if oobn > 0 {
			got, _ = parseRights(oob[:oobn])
			for _, fd := range got {
				unix.CloseOnExec(fd)
			}
		}
		syscall.ForkLock.RUnlock()
		hs = append(hs, got...)
		switch {
		case err == unix.EINTR:
		case err != nil || n == 0 && oobn == 0:
			return hs // EAGAIN: empty
		}
	}
}

// handoffConn wraps the worker's end of a handoff socket, taking ownership
// of it.
func handoffConn(h sysHandle) (*net.UnixConn, error) {
	return unixConnFromFD(h, "clusternet-handoff")
}

// recvConn reads one record from a handoff socket: a connection, and whether
// it filled the window. It returns io.EOF once the primary has closed it.
func recvConn(c *net.UnixConn) (h sysHandle, last bool, err error) {
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(b[:], oob)
		if err != nil {
			return -1, false, err
		}
		if n == 0 && oobn == 0 {
			return -1, false, io.EOF
		}
		var hs []sysHandle
		if oobn > 0 {
			hs, _ = parseRights(oob[:oobn])
		}
		if len(hs) == 1 && flags&unix.MSG_CTRUNC == 0 && (b[0] == recordConn || b[0] == recordConnLast) {
			return hs[0], b[0] == recordConnLast, nil
		}
		// Only the primary writes here, and only records: this cannot
		// happen, but if it did, what came is not a connection to serve.
		closeHandles(hs)
	}
}

// connFromHandle turns a received connection descriptor into a net.Conn
// (a *net.TCPConn or *net.UnixConn), taking ownership of it.
func connFromHandle(h sysHandle) (net.Conn, error) {
	f := os.NewFile(uintptr(h), "conn")
	defer f.Close()
	return net.FileConn(f)
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
