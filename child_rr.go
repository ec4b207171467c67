package clusternet

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// Round-robin handoff.
//
// For each worker that listens on a SchedRR address the primary makes a
// handoff socket: a Unix stream socket pair whose one end it keeps and whose
// other end goes to the worker. A connection is handed over as a one-byte
// record with the descriptor attached; the primary closes its own copy at
// once (the kernel holds the connection while it is in flight), so the
// worker's close is the last and the TCP teardown is the worker's work.
// Accept reads one record, so a connection stays in the socket's queue until
// the worker's Accept takes it.
//
// The primary also keeps a copy of the worker's end. With it the primary
// counts what is queued for the worker (FIONREAD: one byte per connection)
// and takes back what a worker that died, closed its listener, or stopped
// accepting left there, to hand it to another worker: a connection is lost
// only if its worker dies after Accept took it.
//
// A worker may have at most rrWindow connections queued. A connection that
// fills the window is marked, and the worker's Accept asks for more when it
// takes that one (frameDemand), so the primary never waits on a worker that
// is keeping up. A queue that has not shrunk for rrStaleAfter is taken back
// and the worker is sent no more until it calls Accept again.
const (
	rrWindow     = 32
	rrStaleAfter = 250 * time.Millisecond
)

// The handoff records: one byte, each with one connection.
const (
	recordConn     byte = 'c'
	recordConnLast byte = 'C' // the connection that filled the window: ask for more once it is taken
)

type rrListener struct {
	set  *listenerSet
	w    *Worker
	key  uint32
	addr net.Addr
	c    *net.UnixConn // the worker's end of the handoff socket

	mu        sync.Mutex
	closed    bool
	broken    bool // the channel to the primary is gone
	demanding bool // the primary knows this listener accepts
	waiters   int  // goroutines in Accept
}

func (s *listenerSet) newRR(w *Worker, rep listenReply, h *sysHandle) (net.Listener, error) {
	if h == nil {
		s.unlisten(w, rep.Key)
		return nil, protocolErrorf("the primary sent no handoff socket")
	}
	addr, err := parseAddr(rep.Address)
	if err != nil {
		closeHandles([]sysHandle{*h})
		s.unlisten(w, rep.Key)
		return nil, err
	}
	c, err := handoffConn(*h)
	if err != nil {
		s.unlisten(w, rep.Key)
		return nil, err
	}
	l := &rrListener{set: s, w: w, key: rep.Key, addr: addr, c: c}
	s.mu.Lock()
	if s.rr == nil {
		s.rr = make(map[uint32]*rrListener)
	}
	s.rr[rep.Key] = l
	s.mu.Unlock()
	s.add(l)
	return l, nil
}

// Accept waits for the next connection the primary hands to this worker and
// returns it as a *net.TCPConn or *net.UnixConn.
func (l *rrListener) Accept() (net.Conn, error) {
	l.set.conns.accepting(1)
	defer l.set.conns.accepting(-1)
	l.mu.Lock()
	if l.closed || l.broken {
		l.mu.Unlock()
		return nil, l.opError("accept", l.closedErr())
	}
	if !l.demanding {
		l.demanding = true
		l.demand()
	}
	l.waiters++
	l.mu.Unlock()

	h, last, err := recvConn(l.c)

	l.mu.Lock()
	l.waiters--
	if errors.Is(err, io.EOF) {
		l.broken = true // the primary dropped this worker
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			err = l.closedErr()
		}
		l.mu.Unlock()
		return nil, l.opError("accept", err)
	}
	if last {
		l.demand()
	}
	l.mu.Unlock()
	c, err := connFromHandle(h)
	if err != nil {
		return nil, l.opError("accept", err)
	}
	l.set.conns.add(c)
	l.w.stats.handed.Add(1)
	l.w.stats.accepted.Add(1)
	return c, nil
}

// demand tells the primary that this listener takes connections. Called
// with l.mu held.
func (l *rrListener) demand() {
	l.w.ch.send(outFrame{b: keyFrame(frameDemand, l.key, rrWindow, true)})
}

// reclaimed notes that the primary took back the queue: it sends nothing
// more until asked again, at once if an Accept is waiting.
func (l *rrListener) reclaimed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.demanding = l.waiters > 0 && !l.closed && !l.broken
	if l.demanding {
		l.demand()
	}
}

func (l *rrListener) closedErr() error {
	if l.broken && !l.closed {
		return ErrChannelClosed
	}
	return net.ErrClosed
}

func (l *rrListener) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: l.addr.Network(), Addr: l.addr, Err: err}
}

// Close stops the listener. Connections queued for it and not yet accepted
// go back to the primary, which gives them to other workers; the primary's
// socket stays open while other workers listen on it.
func (l *rrListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.opError("close", net.ErrClosed)
	}
	l.closed = true
	l.mu.Unlock()
	// Close waits for a read under way: after it nothing more is taken
	// from the queue, and the unlisten tells the primary to take it back.
	l.c.Close()
	l.set.remove(l)
	l.set.unlisten(l.w, l.key)
	return nil
}

// fail unblocks Accept once the channel to the primary is gone.
func (l *rrListener) fail() {
	l.mu.Lock()
	l.broken = true
	l.mu.Unlock()
	l.c.Close()
}

// Addr returns the primary's listening address.
func (l *rrListener) Addr() net.Addr { return l.addr }

// parseAddr turns the address the primary reports into a net.Addr.
func parseAddr(s string) (net.Addr, error) {
	network, address, _ := cutNetwork(s)
	switch network {
	case "unix":
		return &net.UnixAddr{Name: address, Net: "unix"}, nil
	default:
		return net.ResolveTCPAddr("tcp", address)
	}
}

// joinNetwork and cutNetwork carry an address with its network in one string.
func joinNetwork(network, address string) string { return network + "|" + address }

func cutNetwork(s string) (network, address string, ok bool) { return strings.Cut(s, "|") }
