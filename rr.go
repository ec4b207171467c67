package clusternet

import (
	"net"
	"strings"
	"sync"
	"time"
)

// Round-robin handoff, the worker's side.
//
// The primary hands a worker at most rrWindow connections it has not yet
// taken. A worker asks for them (frameDemand) when Accept is first called,
// and Accept tells the primary it took one (frameTake) before returning it:
// that returns a credit, and until then the primary keeps its own copy of the
// connection, so that one handed to a worker that dies or closes its listener
// before taking it goes to another worker. A worker whose queue sits
// untouched for rrStaleAfter gives its connections back (frameRelease) and is
// sent no more until it calls Accept again, so a worker that stops accepting
// holds nothing up.
const (
	rrWindow     = 32
	rrStaleAfter = 250 * time.Millisecond
)

type rrListener struct {
	set     *listenerSet
	w       *Worker
	key     uint32
	network string
	addr    net.Addr

	mu         sync.Mutex
	cond       sync.Cond
	queue      []sysHandle
	closed     bool
	broken     bool // the channel to the primary is gone
	demanding  bool // the primary may send connections
	waiters    int  // goroutines blocked in Accept
	lastAccept time.Time
	stale      *time.Timer
}

func (s *listenerSet) newRR(w *Worker, rep listenReply) (net.Listener, error) {
	addr, err := parseAddr(rep.Address)
	if err != nil {
		s.unlisten(w, rep.Key)
		return nil, err
	}
	l := &rrListener{set: s, w: w, key: rep.Key, addr: addr}
	l.cond.L = &l.mu
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
	for len(l.queue) == 0 {
		if l.closed || l.broken {
			l.mu.Unlock()
			return nil, l.opError("accept", l.closedErr())
		}
		if !l.demanding {
			l.demanding = true
			l.lastAccept = time.Now()
			l.w.ch.send(outFrame{b: keyFrame(frameDemand, l.key, rrWindow, true)})
		}
		l.waiters++
		l.cond.Wait()
		l.waiters--
	}
	h := l.queue[0]
	l.queue = l.queue[1:]
	l.lastAccept = time.Now()
	// The take must reach the socket before the connection is used: should
	// this worker die with it, the primary must know that it was taken.
	// Queuing it under l.mu keeps it ahead of any later release.
	written := make(chan error, 1)
	err := l.w.ch.send(outFrame{b: keyFrame(frameTake, l.key, 1, true), after: func(err error) { written <- err }})
	l.mu.Unlock()
	if err == nil {
		err = <-written
	}
	if err != nil {
		closeHandles([]sysHandle{h})
		return nil, l.opError("accept", ErrChannelClosed)
	}
	c, err := connFromHandle(h)
	if err != nil {
		return nil, l.opError("accept", err)
	}
	l.set.conns.add(c)
	l.w.stats.accepted.Add(1)
	return c, nil
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

// deliver queues connections the primary handed over.
func (l *rrListener) deliver(hs []sysHandle) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.broken {
		closeHandles(hs) // the primary took them back with the unlisten
		return
	}
	if !l.demanding {
		// Sent before the primary read our release: give them back too.
		l.w.ch.send(outFrame{b: keyFrame(frameRelease, l.key, len(hs), true)})
		closeHandles(hs)
		return
	}
	l.queue = append(l.queue, hs...)
	if l.waiters > 0 {
		l.cond.Broadcast()
	}
	if l.stale == nil {
		l.stale = time.AfterFunc(rrStaleAfter, l.checkStale)
	}
}

// checkStale gives the queue back if nobody has accepted for rrStaleAfter.
func (l *rrListener) checkStale() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stale = nil
	if l.closed || l.broken || len(l.queue) == 0 {
		return
	}
	if idle := time.Since(l.lastAccept); l.waiters > 0 || idle < rrStaleAfter {
		l.stale = time.AfterFunc(rrStaleAfter-idle, l.checkStale)
		return
	}
	l.demanding = false
	l.w.ch.send(outFrame{b: keyFrame(frameRelease, l.key, len(l.queue), true)})
	closeHandles(l.queue)
	l.queue = nil
}

// Close stops the listener. Connections handed to it and not yet accepted go
// back to the primary, which gives them to other workers; the primary's
// socket stays open while other workers listen on it.
func (l *rrListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.opError("close", net.ErrClosed)
	}
	l.closed = true
	queued := l.queue
	l.queue = nil
	if l.stale != nil {
		l.stale.Stop()
		l.stale = nil
	}
	l.cond.Broadcast()
	l.mu.Unlock()
	l.set.remove(l)
	l.set.unlisten(l.w, l.key)
	closeHandles(queued)
	return nil
}

// fail unblocks Accept once the channel to the primary is gone.
func (l *rrListener) fail() {
	l.mu.Lock()
	l.broken = true
	queued := l.queue
	l.queue = nil
	l.cond.Broadcast()
	l.mu.Unlock()
	closeHandles(queued)
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
