//go:build unix

package clusternet

// Runs in the primary: sockets it shares, held out of its poller (Unix).

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// parkedSocket is a socket the primary binds for its workers, held as a bare
// descriptor, out of the runtime's poller: the primary never accepts or reads
// on it itself (a SchedRR address polls a copy of its own), and a polled socket
// would wake the primary for every connection or datagram a worker takes.
type parkedSocket struct {
	mu   sync.Mutex
	fd   int         // -1 once closed
	file *socketFile // a Unix socket's file, removed on Close
}

// park returns c's socket as a parkedSocket and closes c.
func park(c io.Closer) (sharedSocket, error) {
	fd, err := dupHandle(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if ul, ok := c.(*net.UnixListener); ok {
		// Socket files are bound by bindSocketFile, parked as they are;
		// this one has none to remove.
		ul.SetUnlinkOnClose(false)
	}
	c.Close()
	return &parkedSocket{fd: fd}, nil
}

func (p *parkedSocket) SyscallConn() (syscall.RawConn, error) { return p, nil }

// Control runs f on the descriptor, as syscall.RawConn's Control does.
func (p *parkedSocket) Control(f func(fd uintptr)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return net.ErrClosed
	}
	f(uintptr(p.fd))
	return nil
}

var errParked = errors.New("clusternet: the primary does not read or write a socket it shares")

func (p *parkedSocket) Read(func(fd uintptr) bool) error  { return errParked }
func (p *parkedSocket) Write(func(fd uintptr) bool) error { return errParked }

// removeFile removes the socket's file, if it has one and is still the
// very socket the primary created, while the socket is open: the primary
// binds a new socket at the path when this one stopped listening.
func (p *parkedSocket) removeFile() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd >= 0 && p.file != nil {
		p.file.removeEntry()
	}
}

// Close closes the socket and removes its file, if it has one.
func (p *parkedSocket) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return net.ErrClosed
	}
	err := unix.Close(p.fd)
	p.fd = -1
	if p.file != nil {
		p.file.remove()
	}
	return os.NewSyscallError("close", err)
}
