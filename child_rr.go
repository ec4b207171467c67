package clusternet

// Runs in a worker: the listener of a SchedRR address, which takes
// connections from its end of the handoff socket (primary_rr.go says how).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
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
	for errors.Is(err, errConnLost) {
		l.lost(err, last)
		h, last, err = recvConn(l.c)
	}

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
		// EMFILE (child_rr_unix.go): nothing was read, and the error is
		// temporary, as accept(2)'s at the limit.
		return nil, l.opError("accept", err)
	}
	if last {
		l.demand()
	}
	l.mu.Unlock()
	c, err := connFromHandle(h)
	if err != nil {
		l.lost(err, false)
		return nil, l.opError("accept", err)
	}
	l.set.conns.add(c)
	l.w.stats.handed.Add(1)
	l.w.stats.accepted.Add(1)
	return c, nil
}

// errConnLost is recvConn's error for a record whose descriptor the kernel
// dropped (MSG_CTRUNC): the worker had no descriptor free to receive it.
var errConnLost = errors.New("the kernel dropped its descriptor (MSG_CTRUNC): no descriptor was free to receive it")

// lost reports a connection handed to this worker and lost before Accept
// could return it: in the worker's Stats, Handed counts it and Accepted
// does not, and an error event says why. If its record filled the window,
// the listener asks for more as for any other.
func (l *rrListener) lost(err error, last bool) {
	l.w.stats.handed.Add(1)
	l.w.postError(fmt.Errorf("clusternet: a connection handed to this worker on %v was lost: %w", l.addr, err))
	if last {
		l.mu.Lock()
		l.demand()
		l.mu.Unlock()
	}
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
