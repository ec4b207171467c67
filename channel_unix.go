//go:build unix

package clusternet

// Shared: the channel's transport on Unix, a socket pair with SCM_RIGHTS.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysHandle is a file descriptor.
type sysHandle = int

func closeHandles(hs []sysHandle) {
	for _, fd := range hs {
		unix.Close(fd)
	}
}

// unixTransport carries frames over a SOCK_STREAM Unix socket and handles
// with SCM_RIGHTS.
type unixTransport struct {
	c   *net.UnixConn
	oob []byte
}

func newUnixTransport(c *net.UnixConn) *unixTransport {
	return &unixTransport{c: c, oob: make([]byte, unix.CmsgSpace(4*maxFrameHandles))}
}

func (t *unixTransport) send(b []byte, hs []sysHandle) error {
	n, _, err := t.c.WriteMsgUnix(b, unix.UnixRights(hs...), nil)
	if err != nil {
		return err
	}
	// A stream socket may take part of b; the handles went with the first byte.
	if n < len(b) {
		_, err = t.c.Write(b[n:])
	}
	return err
}

func (t *unixTransport) writev(bufs [][]byte) error {
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(t.c)
	return err
}

func (t *unixTransport) recv(b []byte) (int, []sysHandle, error) {
	n, oobn, flags, _, err := t.c.ReadMsgUnix(b, t.oob)
	var hs []sysHandle
	if oobn > 0 {
		var perr error
		hs, perr = parseRights(t.oob[:oobn])
		if perr != nil && err == nil {
			err = perr
		}
	}
	if flags&unix.MSG_CTRUNC != 0 && err == nil {
		err = protocolErrorf("peer sent more handles than one frame may carry (%d)", maxFrameHandles)
	}
	if err == nil && n == 0 && oobn == 0 {
		err = io.EOF
	}
	return n, hs, err
}

func parseRights(oob []byte) ([]sysHandle, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, protocolErrorf("malformed control message: %v", err)
	}
	var hs []sysHandle
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not SCM_RIGHTS: nothing to keep
		}
		hs = append(hs, fds...)
	}
	return hs, nil
}

func (t *unixTransport) close() error { return t.c.Close() }

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// socketPair returns the primary's end of a new channel and the worker's end
// as a raw descriptor in blocking mode (it is the worker's own file
// description, so the mode is the worker's business), close-on-exec until
// the fork places it.
func socketPair() (*net.UnixConn, int, error) {
	fds, err := rawSocketPair()
	if err != nil {
		return nil, -1, err
	}
	c, err := unixConnFromFD(fds[0], "clusternet-primary")
	if err != nil {
		unix.Close(fds[1])
		return nil, -1, err
	}
	return c, fds[1], nil
}

// rawSocketPair returns a connected pair of stream Unix sockets,
// close-on-exec. Not every Unix has SOCK_CLOEXEC: close-on-exec is set under
// the fork lock instead, so that no concurrent fork inherits the pair.
func rawSocketPair() ([2]int, error) {
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return fds, os.NewSyscallError("socketpair", err)
	}
	return fds, nil
}

// unixConnFromFD wraps fd, taking ownership of it.
func unixConnFromFD(fd int, name string) (*net.UnixConn, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f) // dups the descriptor, close-on-exec
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("descriptor %d is a %T, not a Unix socket", fd, c)
	}
	return uc, nil
}

// inheritedChannel opens the channel a worker inherited as descriptor fd,
// after checking that it is a stream Unix socket.
func inheritedChannel(h uint64) (transport, error) {
	fd := int(h)
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("descriptor %d: %w", fd, os.NewSyscallError("getsockopt", err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("descriptor %d: %w", fd, os.NewSyscallError("getsockname", err))
	}
	if _, ok := sa.(*unix.SockaddrUnix); !ok || typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("descriptor %d is not a Unix stream socket", fd)
	}
	// Close-on-exec first, so that the worker's own children never inherit it.
	unix.CloseOnExec(fd)
	c, err := unixConnFromFD(fd, "clusternet-worker")
	if err != nil {
		return nil, err
	}
	return newUnixTransport(c), nil
}

// channelPair returns the primary's end of a new channel and the worker's
// end, a descriptor for the worker to inherit.
func channelPair() (transport, sysHandle, error) {
	c, fd, err := socketPair()
	if err != nil {
		return nil, -1, err
	}
	return newUnixTransport(c), fd, nil
}
