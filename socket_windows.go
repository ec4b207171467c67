//go:build windows

package clusternet

// Shared: sockets on Windows polled with WSAPoll, for the sockets a worker
// shares with others and the connections it takes from them.

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Sockets that came from another process, as net types.
//
// The net package cannot adopt such a socket. A socket belongs to at most
// one I/O completion port, and a socket the primary shares with its workers,
// or one the sender accepted through the net package, already belongs to
// another process's: moving it, as net.FileListener and net.FileConn do,
// takes it away from that process, and Wine cannot move it at all.
// WSAEventSelect is no way out either: a socket has one event selection,
// shared by every process that holds it.
//
// So a shared listening or datagram socket is put in non-blocking mode and
// waited on with WSAPoll, which holds no state in the socket. The wait is a
// short poll at a time, because neither closesocket nor CancelSynchronousIo
// reliably wakes a thread inside a socket call (Wine's do not): between
// polls a waiter checks whether the socket was closed, and the last one to
// leave closes it. A connection accepted this way is a new socket, this
// process's alone, which joins this process's completion port.

var (
	ws2           = windows.NewLazySystemDLL("ws2_32.dll")
	procAccept    = ws2.NewProc("accept")
	procWSAPoll   = ws2.NewProc("WSAPoll")
	procIoctlsock = ws2.NewProc("ioctlsocket")
)

const (
	pollRdNorm = 0x0100 // POLLRDNORM
	pollWrNorm = 0x0010 // POLLWRNORM
	fionbio    = 0x8004667e

	// pollInterval bounds a single wait, and so how long a waiter takes to
	// notice that its socket was closed.
	pollInterval = 100 * time.Millisecond
)

type wsaPollFD struct {
	fd      windows.Handle
	events  int16
	revents int16
}

func setNonblock(s windows.Handle, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	if r, _, err := procIoctlsock.Call(uintptr(s), fionbio, uintptr(unsafe.Pointer(&v))); r != 0 {
		return os.NewSyscallError("ioctlsocket", err)
	}
	return nil
}

// polledSocket is a socket in non-blocking mode, waited on with WSAPoll.
type polledSocket struct {
	h      windows.Handle
	mu     sync.Mutex
	closed bool
	users  int // calls using h; the last to leave a closed socket closes it
}

// newPolledSocket takes ownership of h.
func newPolledSocket(h windows.Handle) (*polledSocket, error) {
	if err := setNonblock(h, true); err != nil {
		closeHandle(h)
		return nil, err
	}
	return &polledSocket{h: h}, nil
}

func (s *polledSocket) acquire() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.users++
	return nil
}

func (s *polledSocket) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users--
	if s.closed && s.users == 0 {
		windows.Closesocket(s.h)
	}
}

// close stops the socket's users within pollInterval; the socket itself is
// closed once the last of them has left.
func (s *polledSocket) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.closed = true
	if s.users == 0 {
		return os.NewSyscallError("closesocket", windows.Closesocket(s.h))
	}
	return nil
}

func (s *polledSocket) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// do runs op until it stops reporting WSAEWOULDBLOCK, waiting for events
// in between, until the deadline (UnixNano in deadline, 0 for none; deadline
// may be nil) or until the socket is closed.
func (s *polledSocket) do(events int16, deadline *atomic.Int64, op func(windows.Handle) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	for {
		timeout := pollInterval
		if deadline != nil {
			if d := deadline.Load(); d != 0 {
				left := time.Until(time.Unix(0, d))
				if left <= 0 {
					return os.ErrDeadlineExceeded
				}
				timeout = min(timeout, left)
			}
		}
		if err := op(s.h); err != windows.WSAEWOULDBLOCK {
			return err
		}
		fd := wsaPollFD{fd: s.h, events: events}
		ms := max(timeout.Milliseconds(), 1)
		if r, _, err := procWSAPoll.Call(uintptr(unsafe.Pointer(&fd)), 1, uintptr(ms)); int32(r) < 0 {
			return os.NewSyscallError("WSAPoll", err)
		}
		if s.isClosed() {
			return net.ErrClosed
		}
	}
}

// polledRawConn is a polledSocket's syscall.RawConn, with the semantics of
// the net package's: Read and Write call f until it returns true, waiting
// for the socket to be ready in between.
type polledRawConn struct{ s *polledSocket }

func (c polledRawConn) Control(f func(fd uintptr)) error {
	if err := c.s.acquire(); err != nil {
		return err
	}
	defer c.s.release()
	f(uintptr(c.s.h))
	return nil
}

func (c polledRawConn) Read(f func(fd uintptr) bool) error {
	return c.s.do(pollRdNorm, nil, func(h windows.Handle) error { return doneOrWait(f(uintptr(h))) })
}

func (c polledRawConn) Write(f func(fd uintptr) bool) error {
	return c.s.do(pollWrNorm, nil, func(h windows.Handle) error { return doneOrWait(f(uintptr(h))) })
}

// socketError wraps the error of a socket call, unless it only says to wait.
func socketError(call string, err error) error {
	if err == nil || err == windows.WSAEWOULDBLOCK {
		return err
	}
	return os.NewSyscallError(call, err)
}

func doneOrWait(done bool) error {
	if done {
		return nil
	}
	return windows.WSAEWOULDBLOCK
}

// pollListener is a net.Listener on a listening socket that other processes
// share: the kernel gives each connection to whichever process accepts it
// first.
type pollListener struct {
	s    *polledSocket
	addr net.Addr
}

// newPollListener takes ownership of h.
func newPollListener(h windows.Handle) (*pollListener, error) {
	sa, err := windows.Getsockname(h)
	if err != nil {
		closeHandle(h)
		return nil, os.NewSyscallError("getsockname", err)
	}
	addr := sockaddrToAddr(sa, true)
	if addr == nil {
		closeHandle(h)
		return nil, errUnknownFamily
	}
	s, err := newPolledSocket(h)
	if err != nil {
		return nil, err
	}
	return &pollListener{s: s, addr: addr}, nil
}

// Accept waits for the next connection and returns it as a net.Conn served
// by this process's completion port.
func (l *pollListener) Accept() (net.Conn, error) {
	var cs windows.Handle
	err := l.s.do(pollRdNorm, nil, func(h windows.Handle) error {
		r, _, err := procAccept.Call(uintptr(h), 0, 0)
		if windows.Handle(r) != windows.InvalidHandle {
			cs = windows.Handle(r)
			return nil
		}
		if err == windows.WSAECONNRESET {
			return windows.WSAEWOULDBLOCK // the client gave up before we accepted it
		}
		return socketError("accept", err)
	})
	if err != nil {
		return nil, &net.OpError{Op: "accept", Net: l.addr.Network(), Addr: l.addr, Err: err}
	}
	c, err := acceptedConn(cs)
	if err != nil {
		return nil, &net.OpError{Op: "accept", Net: l.addr.Network(), Addr: l.addr, Err: err}
	}
	return c, nil
}

// acceptedConn prepares a socket that accept returned, which inherits the
// listener's modes, and wraps it. The socket is new and this process's
// alone, so the net package can take it over, as a *net.TCPConn or
// *net.UnixConn. Where it cannot (Wine cannot take a socket off the
// completion port that os.NewFile put it on, FileConn's first step), the
// *os.File serves it, with the net package's defaults for TCP.
func acceptedConn(h windows.Handle) (net.Conn, error) {
	if err := setNonblock(h, false); err != nil {
		closeHandle(h)
		return nil, err
	}
	windows.SetHandleInformation(h, windows.HANDLE_FLAG_INHERIT, 0)
	f := os.NewFile(uintptr(h), "accepted")
	if c, err := net.FileConn(f); err == nil {
		f.Close()
		return c, nil
	}
	c, err := newSocketConn(f, h)
	if err != nil {
		return nil, err
	}
	if c.laddr.Network() == "tcp" {
		windows.SetsockoptInt(h, windows.IPPROTO_TCP, windows.TCP_NODELAY, 1)
		windows.SetsockoptInt(h, windows.SOL_SOCKET, windows.SO_KEEPALIVE, 1)
	}
	return c, nil
}

// Close stops the listener: Accept returns within pollInterval. The socket
// is this process's copy; the primary's stays open for the other workers.
func (l *pollListener) Close() error {
	if err := l.s.close(); err != nil {
		return &net.OpError{Op: "close", Net: l.addr.Network(), Addr: l.addr, Err: err}
	}
	return nil
}

func (l *pollListener) Addr() net.Addr { return l.addr }

// SyscallConn returns the listener's socket, so that it can be sent on.
func (l *pollListener) SyscallConn() (syscall.RawConn, error) { return polledRawConn{l.s}, nil }

// socketConn is a connected socket as a net.Conn, served by an *os.File: by
// this process's completion port when the socket could join it, and
// synchronously, without deadlines, when the sender's process holds the
// socket's completion port (a connection the net package accepted there).
type socketConn struct {
	f            *os.File
	laddr, raddr net.Addr
}

// newSocketConn takes ownership of f, which holds the connected socket h.
func newSocketConn(f *os.File, h windows.Handle) (*socketConn, error) {
	sa, err := windows.Getsockname(h)
	if err != nil {
		f.Close()
		return nil, os.NewSyscallError("getsockname", err)
	}
	c := &socketConn{f: f, laddr: sockaddrToAddr(sa, true)}
	if c.laddr == nil {
		f.Close()
		return nil, errUnknownFamily
	}
	if pa, err := windows.Getpeername(h); err == nil {
		c.raddr = sockaddrToAddr(pa, true)
	} else {
		c.raddr = emptyAddr(c.laddr)
	}
	return c, nil
}

// emptyAddr is the remote address of a connection whose peer has none to
// tell: an unnamed Unix socket, or a peer already gone.
func emptyAddr(local net.Addr) net.Addr {
	if local.Network() == "unix" {
		return &net.UnixAddr{Net: "unix"}
	}
	return &net.TCPAddr{}
}

func (c *socketConn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	return n, c.opError("read", err)
}

func (c *socketConn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	return n, c.opError("write", err)
}

func (c *socketConn) Close() error { return c.opError("close", c.f.Close()) }

func (c *socketConn) LocalAddr() net.Addr  { return c.laddr }
func (c *socketConn) RemoteAddr() net.Addr { return c.raddr }

func (c *socketConn) SetDeadline(t time.Time) error {
	return c.opError("set", c.f.SetDeadline(t))
}

func (c *socketConn) SetReadDeadline(t time.Time) error {
	return c.opError("set", c.f.SetReadDeadline(t))
}

func (c *socketConn) SetWriteDeadline(t time.Time) error {
	return c.opError("set", c.f.SetWriteDeadline(t))
}

// CloseRead shuts down the reading side, as TCPConn.CloseRead.
func (c *socketConn) CloseRead() error { return c.shutdown(windows.SHUT_RD) }

// CloseWrite shuts down the writing side, as TCPConn.CloseWrite; net/http
// uses it to close connections gracefully.
func (c *socketConn) CloseWrite() error { return c.shutdown(windows.SHUT_WR) }

func (c *socketConn) shutdown(how int) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return c.opError("close", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = windows.Shutdown(windows.Handle(fd), how) }); err != nil {
		return c.opError("close", err)
	}
	return c.opError("close", os.NewSyscallError("shutdown", serr))
}

// SyscallConn returns the connection's socket, so that it can be sent on.
func (c *socketConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

// opError turns the *os.File's errors into the net package's.
func (c *socketConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: c.laddr.Network(), Source: c.laddr, Addr: c.raddr, Err: err}
}

// pollPacketConn is a net.PacketConn on a datagram socket that other
// processes may share: each datagram goes to whichever reads it first.
type pollPacketConn struct {
	s         *polledSocket
	laddr     net.Addr
	inet4     bool // an AF_INET socket, which takes IPv4 addresses only
	rdeadline atomic.Int64
	wdeadline atomic.Int64
}

// newPollPacketConn takes ownership of h.
func newPollPacketConn(h windows.Handle) (*pollPacketConn, error) {
	sa, err := windows.Getsockname(h)
	if err != nil {
		closeHandle(h)
		return nil, os.NewSyscallError("getsockname", err)
	}
	laddr := sockaddrToAddr(sa, false)
	if laddr == nil {
		closeHandle(h)
		return nil, errUnknownFamily
	}
	s, err := newPolledSocket(h)
	if err != nil {
		return nil, err
	}
	_, inet4 := sa.(*windows.SockaddrInet4)
	return &pollPacketConn{s: s, laddr: laddr, inet4: inet4}, nil
}

func (c *pollPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	var n int
	var from windows.Sockaddr
	err := c.s.do(pollRdNorm, &c.rdeadline, func(h windows.Handle) error {
		var err error
		n, from, err = windows.Recvfrom(h, b, 0)
		if err == windows.WSAECONNRESET || err == windows.WSAENETRESET {
			// An ICMP error about an earlier datagram of ours, which the
			// net package has Windows keep to itself.
			return windows.WSAEWOULDBLOCK
		}
		return socketError("recvfrom", err)
	})
	if err != nil {
		return n, nil, c.opError("read", nil, err)
	}
	return n, sockaddrToAddr(from, false), nil
}

func (c *pollPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.opError("write", addr, syscall.EINVAL)
	}
	to, err := c.sockaddr(ua)
	if err != nil {
		return 0, c.opError("write", addr, err)
	}
	err = c.s.do(pollWrNorm, &c.wdeadline, func(h windows.Handle) error {
		return socketError("sendto", windows.Sendto(h, b, 0, to))
	})
	if err != nil {
		return 0, c.opError("write", addr, err)
	}
	return len(b), nil
}

// sockaddr converts a destination for the socket's address family.
func (c *pollPacketConn) sockaddr(a *net.UDPAddr) (windows.Sockaddr, error) {
	if c.inet4 {
		ip4 := a.IP.To4()
		if ip4 == nil {
			return nil, &net.AddrError{Err: "non-IPv4 address", Addr: a.String()}
		}
		sa := &windows.SockaddrInet4{Port: a.Port}
		copy(sa.Addr[:], ip4)
		return sa, nil
	}
	sa := &windows.SockaddrInet6{Port: a.Port}
	copy(sa.Addr[:], a.IP.To16())
	if a.Zone != "" {
		if ifi, err := net.InterfaceByName(a.Zone); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if id, err := strconv.ParseUint(a.Zone, 10, 32); err == nil {
			sa.ZoneId = uint32(id)
		}
	}
	return sa, nil
}

// Close stops the connection: ReadFrom and WriteTo return within
// pollInterval. The socket is this process's copy; the primary's stays open
// for the other workers.
func (c *pollPacketConn) Close() error {
	if err := c.s.close(); err != nil {
		return c.opError("close", nil, err)
	}
	return nil
}

func (c *pollPacketConn) LocalAddr() net.Addr { return c.laddr }

func (c *pollPacketConn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, &c.rdeadline, &c.wdeadline)
}

func (c *pollPacketConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, &c.rdeadline)
}

func (c *pollPacketConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, &c.wdeadline)
}

// setDeadline stores t, as UnixNano (0 for none), in ds; do reads it.
func (c *pollPacketConn) setDeadline(t time.Time, ds ...*atomic.Int64) error {
	if c.s.isClosed() {
		return c.opError("set", nil, net.ErrClosed)
	}
	var v int64
	if !t.IsZero() {
		v = max(t.UnixNano(), 1)
	}
	for _, d := range ds {
		d.Store(v)
	}
	return nil
}

// SyscallConn returns the connection's socket, so that it can be sent on.
func (c *pollPacketConn) SyscallConn() (syscall.RawConn, error) { return polledRawConn{c.s}, nil }

func (c *pollPacketConn) opError(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: c.laddr.Network(), Source: c.laddr, Addr: addr, Err: err}
}

var errUnknownFamily = errors.New("clusternet: socket of an address family other than IPv4, IPv6 and Unix")

// sockaddrToAddr converts a socket address to the net package's type for a
// stream (TCP, Unix) or datagram (UDP) socket.
func sockaddrToAddr(sa windows.Sockaddr, stream bool) net.Addr {
	var ip net.IP
	var port int
	var zone string
	switch sa := sa.(type) {
	case *windows.SockaddrInet4:
		ip, port = net.IP(sa.Addr[:]).To16(), sa.Port
	case *windows.SockaddrInet6:
		ip, port = net.IP(sa.Addr[:]), sa.Port
		if sa.ZoneId != 0 {
			zone = strconv.FormatUint(uint64(sa.ZoneId), 10)
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
	case *windows.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	default:
		return nil // see errUnknownFamily
	}
	if stream {
		return &net.TCPAddr{IP: ip, Port: port, Zone: zone}
	}
	return &net.UDPAddr{IP: ip, Port: port, Zone: zone}
}
