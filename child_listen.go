package clusternet

// Runs in a worker: its listeners (the registry of what it asked the
// primary for, the listeners on sockets of its own, the connections they
// handed out, which Disconnect waits for) and Listen's worker half.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// absUnixPath makes a Unix socket path absolute in the worker, whose working
// directory may differ from the primary's, and resolves the symbolic links
// in its directory as the worker sees them: the primary follows none in a
// path a worker gives it (docs/security.md). Abstract names (@...) stay.
func absUnixPath(network, address string) (string, error) {
	if !isSocketFile(network, address) {
		return address, nil
	}
	path, err := filepath.Abs(address)
	if err != nil {
		return "", err
	}
	dir, name := filepath.Split(path)
	if real, err := filepath.EvalSymlinks(dir); err == nil && name != "" {
		// Where the directory cannot be resolved, the primary says why.
		path = filepath.Join(real, name)
	}
	return path, nil
}

func (w *Worker) reportListening(a Address) {
	body, _ := json.Marshal(a)
	f := newFrame(frameListening, len(body), 0)
	w.ch.send(outFrame{b: append(f, body...)})
}

// listenerSet is a worker's clusternet listeners and packet connections.
type listenerSet struct {
	mu      sync.Mutex
	seq     uint32
	pending map[uint32]chan listenResult
	rr      map[uint32]*rrListener // by key, to route the primary's reclaim notices
	all     map[closer]struct{}    // everything Disconnect closes
	gone    bool                   // the channel is closed
	conns   connTracker
	indexes map[string]*indexSet // by network|address: the indexes of its listens in use
	indexOf map[uint32]indexRef  // by key: the index its listen took

	// handoffs holds the handoff socket the primary sent for a
	// SchedReusePort key (frameAdopt) before its listener was made: the
	// notice can come before the listen reply has been acted on.
	handoffs map[uint32]sysHandle
}

// Listen calls are numbered per network and address, as Node numbers
// them: the worker's nth listen on an address is index n-1 while those
// before it are open, and the primary shares one socket per address and
// index. So two listens on ":0" in one worker get two ports, and the nth
// of every worker shares one (Node's test-cluster-child-index-*). The
// numbering starts over once all of an address's listens are closed.
type indexSet struct {
	next int
	live map[int]bool
}

type indexRef struct {
	addr  string
	index int
}

// takeIndex numbers a listen on addr.
func (s *listenerSet) takeIndex(addr string) indexRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.indexes == nil {
		s.indexes = make(map[string]*indexSet)
	}
	set := s.indexes[addr]
	if set == nil {
		set = &indexSet{live: make(map[int]bool)}
		s.indexes[addr] = set
	}
	ref := indexRef{addr, set.next}
	set.next++
	set.live[ref.index] = true
	return ref
}

// keepIndex ties ref to the primary's key for the listen, so that
// unlisten releases it.
func (s *listenerSet) keepIndex(key uint32, ref indexRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.indexOf == nil {
		s.indexOf = make(map[uint32]indexRef)
	}
	s.indexOf[key] = ref
}

// releaseIndex gives ref back. Called with s.mu held.
func (s *listenerSet) releaseIndexLocked(ref indexRef) {
	set := s.indexes[ref.addr]
	if set == nil {
		return
	}
	delete(set.live, ref.index)
	if len(set.live) == 0 {
		delete(s.indexes, ref.addr)
	}
}

func (s *listenerSet) releaseIndex(ref indexRef) {
	s.mu.Lock()
	s.releaseIndexLocked(ref)
	s.mu.Unlock()
}

type closer interface{ Close() error }

type listenResult struct {
	rep listenReply
	h   *sysHandle
}

// request asks the primary for an address and waits for its answer.
//
// A listen that fails because the worker is leaving (the primary's
// disconnect has come, or its drain has begun) does not return: as in Node,
// whose primary ignores the listen of a worker that is disconnecting, it
// neither completes nor fails, and the worker exits once drained (code 0),
// whatever main would have done with the error. Only ctx ends it.
func (s *listenerSet) request(ctx context.Context, w *Worker, req listenRequest) (listenReply, *sysHandle, error) {
	rep, h, err := s.ask(ctx, w, req)
	if err != nil && w.leavingSelf.Load() {
		<-ctx.Done()
		return listenReply{}, nil, &net.OpError{Op: "listen", Net: req.Network, Err: ctx.Err()}
	}
	return rep, h, err
}

// ask sends the request and waits for the answer.
func (s *listenerSet) ask(ctx context.Context, w *Worker, req listenRequest) (listenReply, *sysHandle, error) {
	if w.ch == nil {
		return listenReply{}, nil, w.chErr
	}
	done := make(chan listenResult, 1)
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return listenReply{}, nil, &net.OpError{Op: "listen", Net: req.Network, Err: ErrChannelClosed}
	}
	s.seq++
	req.Seq = s.seq
	if s.pending == nil {
		s.pending = make(map[uint32]chan listenResult)
	}
	s.pending[req.Seq] = done
	s.mu.Unlock()

	body, _ := json.Marshal(req)
	if err := w.ch.send(outFrame{b: append(newFrame(frameListen, len(body), 0), body...)}); err != nil {
		s.forget(req.Seq)
		return listenReply{}, nil, &net.OpError{Op: "listen", Net: req.Network, Err: err}
	}
	select {
	case res, ok := <-done:
		if !ok {
			return listenReply{}, nil, &net.OpError{Op: "listen", Net: req.Network, Err: ErrChannelClosed}
		}
		if res.rep.Err != nil {
			return listenReply{}, nil, res.rep.Err.error(req.Network, req.Address)
		}
		return res.rep, res.h, nil
	case <-ctx.Done():
		if !s.forget(req.Seq) {
			// The answer is in: give back what it granted.
			res := <-done
			if res.h != nil {
				closeHandles([]sysHandle{*res.h})
			}
			if res.rep.Err == nil && res.rep.Key != 0 {
				s.unlisten(w, res.rep.Key)
			}
		}
		return listenReply{}, nil, &net.OpError{Op: "listen", Net: req.Network, Err: ctx.Err()}
	}
}

// forget drops a pending request; false if its answer was already delivered.
func (s *listenerSet) forget(seq uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pending[seq]
	delete(s.pending, seq)
	return ok
}

// handleFrame routes the primary's listening frames.
func (s *listenerSet) handleFrame(w *Worker, f frame) error {
	switch f.kind {
	case frameListenReply:
		var rep listenReply
		if err := json.Unmarshal(f.body, &rep); err != nil || len(f.handles) > 1 {
			closeHandles(f.handles)
			return protocolErrorf("malformed listen reply")
		}
		res := listenResult{rep: rep}
		if len(f.handles) == 1 {
			res.h = &f.handles[0]
		}
		s.mu.Lock()
		done, ok := s.pending[rep.Seq]
		delete(s.pending, rep.Seq)
		s.mu.Unlock()
		if ok {
			done <- res
			return nil
		}
		// Nobody waits any more: give back what the reply granted.
		closeHandles(f.handles)
		if rep.Err == nil && rep.Key != 0 {
			s.unlisten(w, rep.Key)
		}
	case frameReclaimed:
		key, _, err := parseKeyFrame(f, false)
		if err != nil {
			return err
		}
		s.mu.Lock()
		l := s.rr[key]
		s.mu.Unlock()
		if l != nil {
			l.reclaimed()
		}
	case frameRebound:
		key, _, err := parseKeyFrame(f, false)
		if err == nil && len(f.handles) != 1 {
			err = protocolErrorf("a rebound notice carries %d handle(s), want 1", len(f.handles))
		}
		if err != nil {
			closeHandles(f.handles)
			return err
		}
		tl := s.sharedListener(key)
		if tl == nil {
			closeHandles(f.handles) // closed meanwhile
			return nil
		}
		tl.replace(listenerFromHandle(&f.handles[0]))
	case frameAdopt:
		key, _, err := parseKeyFrame(frame{kind: f.kind, body: f.body}, false)
		if err == nil && len(f.handles) != 1 {
			err = protocolErrorf("a handoff socket notice carries %d handle(s), want 1", len(f.handles))
		}
		if err != nil {
			closeHandles(f.handles)
			return err
		}
		s.mu.Lock()
		tl := s.ownListenerLocked(key)
		if tl == nil {
			// Not made yet (or closed: unlisten drops it).
			if old, ok := s.handoffs[key]; ok {
				closeHandles([]sysHandle{old})
			}
			if s.handoffs == nil {
				s.handoffs = make(map[uint32]sysHandle)
			}
			s.handoffs[key] = f.handles[0]
		}
		s.mu.Unlock()
		if tl != nil && !tl.adopt(f.handles[0]) {
			closeHandles(f.handles) // closed meanwhile: the primary takes back what it sent
		}
	}
	return nil
}

// ownListenerLocked returns the SchedReusePort listener for key, or nil.
// Called with s.mu held.
func (s *listenerSet) ownListenerLocked(key uint32) *trackedListener {
	for c := range s.all {
		if tl, ok := c.(*trackedListener); ok && tl.key == key && tl.own {
			return tl
		}
	}
	return nil
}

// claimHandoff gives tl, a SchedReusePort listener just made, the handoff
// socket the primary sent for it before, if it did.
func (s *listenerSet) claimHandoff(tl *trackedListener) {
	s.mu.Lock()
	h, ok := s.handoffs[tl.key]
	delete(s.handoffs, tl.key)
	s.mu.Unlock()
	if ok && !tl.adopt(h) {
		closeHandles([]sysHandle{h})
	}
}

// sharedListener returns the listener on the primary's socket for key,
// or nil.
func (s *listenerSet) sharedListener(key uint32) *trackedListener {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.all {
		if tl, ok := c.(*trackedListener); ok && tl.key == key {
			return tl
		}
	}
	return nil
}

func (s *listenerSet) unlisten(w *Worker, key uint32) {
	s.mu.Lock()
	if ref, ok := s.indexOf[key]; ok {
		delete(s.indexOf, key)
		s.releaseIndexLocked(ref)
	}
	if h, ok := s.handoffs[key]; ok {
		delete(s.handoffs, key)
		closeHandles([]sysHandle{h})
	}
	s.mu.Unlock()
	w.ch.send(outFrame{b: keyFrame(frameUnlisten, key, 0, false)})
}

// track registers a listener that accepts on its own socket, so that
// Disconnect closes it and waits for its connections.
func (s *listenerSet) track(ln net.Listener, network string, key uint32, mode shareMode) *trackedListener {
	tl := &trackedListener{Listener: ln, membership: membership{set: s, key: key}, shared: mode == modeShared, own: mode == modeOwn}
	s.add(tl)
	return tl
}

func (s *listenerSet) add(c closer) {
	s.mu.Lock()
	if s.all == nil {
		s.all = make(map[closer]struct{})
	}
	s.all[c] = struct{}{}
	s.mu.Unlock()
}

func (s *listenerSet) remove(c closer) {
	s.mu.Lock()
	delete(s.all, c)
	if l, ok := c.(*rrListener); ok {
		delete(s.rr, l.key)
	}
	s.mu.Unlock()
}

// closeAll closes every listener and packet connection of the worker.
func (s *listenerSet) closeAll() {
	s.mu.Lock()
	all := make([]closer, 0, len(s.all))
	for c := range s.all {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// waitConns waits until every connection the listeners handed out is closed.
func (s *listenerSet) waitConns() { s.conns.wait() }

// channelClosed fails the requests still waiting for the primary.
func (s *listenerSet) channelClosed() {
	s.mu.Lock()
	s.gone = true
	for seq, done := range s.pending {
		close(done)
		delete(s.pending, seq)
	}
	rr := make([]*rrListener, 0, len(s.rr))
	for _, l := range s.rr {
		rr = append(rr, l)
	}
	s.mu.Unlock()
	for _, l := range rr {
		l.fail()
	}
}

// trackedListener is a listener on a socket of the worker's own (shared with
// the primary, or its own SO_REUSEPORT socket).
//
// A socket the primary shares with other workers (shared) can be stopped
// by any of them: on Linux, shutdown(SHUT_RD) on a copy makes accept fail
// with EINVAL on a TCP socket, and wait for ever on a Unix one. The primary
// then binds the address again and sends the new socket (frameRebound),
// which replace puts in Listener's place. Accept waits for it and goes on
// accepting there: net/http's Serve returns for good on an error that is
// not temporary, and another worker's doing must not end this one's.
//
// A SchedReusePort socket of the worker's own (own) also returns the
// connections the primary accepted on a retired socket and sends on a
// handoff socket (frameAdopt, primary_reuseport.go), ahead of its own: a
// watch wakes an Accept waiting on the own socket with a deadline in the
// past when a record arrives, and Accept takes one record at a time.
type trackedListener struct {
	net.Listener // the socket accepted on: replaced under mu, read under mu
	membership
	addr   net.Addr // if set, the address Addr returns
	shared bool     // the primary shares the socket with other workers, and may replace it
	own    bool     // the worker's own SO_REUSEPORT socket: the primary may send connections for it

	mu      sync.Mutex
	changed chan struct{} // closed when Listener is replaced or the listener closed
	closed  bool
	err     error         // why the replacement could not be used
	handoff *net.UnixConn // own: where the primary sends the connections of retired sockets
	watch   *net.UnixConn // own: a second handle on handoff, which the watch waits on
	drained chan struct{} // own: Accept found the handoff socket empty; the watch waits again
	quit    chan struct{} // own: closed by Close, ends the watch
	woken   bool          // Listener has a deadline in the past, set by the watch
}

// deadliner is a listener whose Accept a deadline can end (TCP and Unix
// listeners).
type deadliner interface{ SetDeadline(time.Time) error }

// adopt takes h, a handoff socket for this listener, and starts watching
// it; it reports false, taking nothing, if the listener is closed or has
// one already.
func (l *trackedListener) adopt(h sysHandle) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.handoff != nil {
		return false
	}
	c, err := handoffConn(h)
	if err != nil {
		return true // closed by handoffConn: the primary takes back what it sent
	}
	watch, err := watchCopy(c)
	if err != nil {
		c.Close() // the primary takes back what it sent
		return true
	}
	l.handoff, l.watch, l.drained, l.quit = c, watch, make(chan struct{}, 1), make(chan struct{})
	go l.watchHandoff(watch, l.drained, l.quit)
	return true
}

// watchHandoff wakes Accept whenever the handoff socket has a record and
// Accept has not found it empty since.
func (l *trackedListener) watchHandoff(c *net.UnixConn, drained, quit <-chan struct{}) {
	defer c.Close()
	for {
		if err := waitReadable(c); err != nil {
			return // closed
		}
		l.mu.Lock()
		if d, ok := l.Listener.(deadliner); ok && !l.woken && !l.closed {
			l.woken = d.SetDeadline(time.Now()) == nil
		}
		l.mu.Unlock()
		select {
		case <-drained:
		case <-quit:
			return
		}
	}
}

// takeHandedOff returns the next connection on the handoff socket, if one
// waits; ok is false once it is empty.
func (l *trackedListener) takeHandedOff(c *net.UnixConn, drained chan<- struct{}) (conn net.Conn, ok bool) {
	for {
		h, _, err := recvConnNow(c)
		if errors.Is(err, errConnLost) {
			continue // reported as under SchedRR: counted, not returned
		}
		if err != nil {
			select { // empty (EAGAIN), closed, or the primary took it back
			case drained <- struct{}{}:
			default:
			}
			return nil, false
		}
		conn, err := connFromHandle(h)
		if err != nil {
			continue
		}
		return conn, true
	}
}

// Addr returns the listener's address: for a Unix socket the primary bound,
// the path the worker asked for.
func (l *trackedListener) Addr() net.Addr {
	if l.addr != nil {
		return l.addr
	}
	return l.current().Addr()
}

// current returns the socket Accept uses now.
func (l *trackedListener) current() net.Listener {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Listener
}

func (l *trackedListener) Accept() (net.Conn, error) {
	l.set.conns.accepting(1)
	defer l.set.conns.accepting(-1)
	for {
		l.mu.Lock()
		ln, closed, rerr := l.Listener, l.closed, l.err
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		changed := l.changed
		hc, drained := l.handoff, l.drained
		l.mu.Unlock()
		if rerr != nil {
			return nil, rerr
		}
		if hc != nil && !closed {
			if c, ok := l.takeHandedOff(hc, drained); ok {
				l.set.conns.add(c)
				self.stats.handed.Add(1)
				self.stats.accepted.Add(1)
				return c, nil
			}
		}
		c, err := ln.Accept()
		if err == nil {
			l.set.conns.add(c)
			self.stats.accepted.Add(1)
			return c, nil
		}
		if l.own && errors.Is(err, os.ErrDeadlineExceeded) {
			l.mu.Lock()
			woken := l.woken
			if woken {
				// The watch's wake-up: take the deadline off, and the
				// handoff socket's connections.
				l.woken = false
				ln.(deadliner).SetDeadline(time.Time{})
			}
			l.mu.Unlock()
			if woken {
				continue
			}
		}
		if closed || !l.shared || !sharedSocketsRebound || !stoppedListening(err) && !isClosedListenErr(err) {
			return nil, err
		}
		// Closed by replace or Close, which say so first (Close: the next
		// turn returns the closed listener's error); or stopped by another
		// worker, and the primary sends a new socket within a look
		// (sharedCheckInterval).
		select {
		case <-changed:
		case <-self.readerDone:
			return nil, err // no primary to send one
		}
	}
}

// stoppedListening reports whether accept failed because the socket does
// not listen (accept(2): EINVAL), which only another holder of a copy can
// have done to a socket the primary shares.
func stoppedListening(err error) bool { return errors.Is(err, syscall.EINVAL) }

// replace makes ln, the primary's new socket for the address, the one
// Accept uses, and closes the old one: that ends the Accept calls waiting
// on it, which on a Unix socket that was shut down would wait for ever
// (accept says EAGAIN, and poll nothing new). If err says why the socket
// could not be taken, Accept returns it.
func (l *trackedListener) replace(ln net.Listener, err error) {
	l.mu.Lock()
	if l.closed || l.err != nil {
		l.mu.Unlock()
		if ln != nil {
			ln.Close()
		}
		return
	}
	old := l.Listener
	if err != nil {
		l.err, old = fmt.Errorf("clusternet: taking the primary's new socket: %w", err), nil
	} else {
		l.Listener = ln
	}
	l.notifyLocked()
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// notifyLocked wakes the Accept calls waiting for a change. Called with
// l.mu held.
func (l *trackedListener) notifyLocked() {
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

func (l *trackedListener) Close() error {
	l.mu.Lock()
	ln, hc, watch, quit := l.Listener, l.handoff, l.watch, l.quit
	if !l.closed {
		l.closed = true
		l.notifyLocked()
		if hc != nil {
			close(quit)
		}
	}
	l.mu.Unlock()
	if hc != nil {
		hc.Close() // the primary takes back what is left there
		watch.Close()
	}
	err := ln.Close()
	l.leave(l)
	return err
}

// membership is what a worker's socket of its own holds of the worker's
// listener set and, when the primary shares it, of the primary's sharedAddr.
type membership struct {
	set  *listenerSet
	key  uint32 // 0 when the primary is not involved (Exclusive)
	once sync.Once
}

// leave takes c out of the worker's set and tells the primary, once.
func (m *membership) leave(c closer) {
	m.once.Do(func() {
		m.set.remove(c)
		if m.key != 0 {
			m.set.unlisten(self, m.key)
		}
	})
}

// connTracker remembers the connections a worker's listeners handed out, so
// that Disconnect can wait for them to close without wrapping them: users get
// the *net.TCPConn itself.
type connTracker struct {
	mu    sync.Mutex
	conns []syscall.RawConn
	live  int // live connections at the last prune
	// busy counts Accept calls under way: a connection an Accept holds but
	// has not added yet must keep Disconnect waiting too. Closing the
	// listeners ends those calls, so the count drops to zero.
	busy int
}

func (t *connTracker) accepting(d int) {
	t.mu.Lock()
	t.busy += d
	t.mu.Unlock()
}

func (t *connTracker) add(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	t.mu.Lock()
	t.conns = append(t.conns, rc)
	if len(t.conns) >= 2*t.live+64 {
		t.pruneLocked()
	}
	t.mu.Unlock()
}

// pruneLocked drops the connections that are closed: a closed connection's
// RawConn refuses Control.
func (t *connTracker) pruneLocked() {
	live := t.conns[:0]
	for _, rc := range t.conns {
		if rc.Control(func(uintptr) {}) == nil {
			live = append(live, rc)
		}
	}
	clear(t.conns[len(live):])
	t.conns = live
	t.live = len(live)
}

// inFlight returns the number of connections handed out and not yet closed.
func (t *connTracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked()
	return len(t.conns)
}

func (t *connTracker) acceptsUnderWay() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.busy > 0
}

// wait waits until no connection is open and no Accept is under way.
func (t *connTracker) wait() {
	for t.inFlight() > 0 || t.acceptsUnderWay() {
		time.Sleep(20 * time.Millisecond)
	}
}

// trackPacket registers a packet connection so that Disconnect closes it.
// The result is a *UDPConn, which has every method of *net.UDPConn.
func (s *listenerSet) trackPacket(pc net.PacketConn, key uint32) net.PacketConn {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		c := &trackedPacketConn{PacketConn: pc, membership: membership{set: s, key: key}}
		s.add(c)
		return c
	}
	c := &UDPConn{UDPConn: uc, membership: membership{set: s, key: key}}
	s.add(c)
	return c
}

// trackedPacketConn does for any other packet connection what UDPConn does
// for a *net.UDPConn. On Windows a socket that the primary shares with other
// workers is one: the net package cannot adopt it.
type trackedPacketConn struct {
	net.PacketConn
	membership
}

func (c *trackedPacketConn) Close() error {
	err := c.PacketConn.Close()
	c.leave(c)
	return err
}

// UDPConn is a worker's UDP socket shared through the primary: a
// *net.UDPConn whose Close also tells the primary, which closes its socket
// once no worker uses it.
type UDPConn struct {
	*net.UDPConn
	membership
}

// Close closes the worker's socket and leaves the primary's to the others.
func (c *UDPConn) Close() error {
	err := c.UDPConn.Close()
	c.leave(c)
	return err
}

// listenSelf is Listen in a worker: a socket of its own with Exclusive,
// otherwise the primary's answer for the address.
func (w *Worker) listenSelf(ctx context.Context, lc *ListenConfig, network, address string) (net.Listener, error) {
	if lc.Exclusive {
		ln, err := lc.bind(ctx, network, address, lc.ReusePort)
		if err != nil {
			return nil, err
		}
		tl := w.listeners.track(ln, network, 0, "")
		w.reportListening(addressOf(network, ln.Addr()))
		return tl, nil
	}
	address, err := absUnixPath(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	ref := w.listeners.takeIndex(joinNetwork(network, address))
	rep, h, err := w.listeners.request(ctx, w, listenRequest{Network: network, Address: address, Index: ref.index, Backlog: lc.Backlog, ReusePort: lc.ReusePort})
	if err != nil {
		w.listeners.releaseIndex(ref)
		return nil, err
	}
	w.listeners.keepIndex(rep.Key, ref)
	var ln net.Listener
	switch rep.Mode {
	case modeRR:
		ln, err = w.listeners.newRR(w, rep, h)
	default:
		ln, err = listenerFromHandle(h)
		if err == nil {
			tl := w.listeners.track(ln, network, rep.Key, rep.Mode)
			if tl.own {
				w.listeners.claimHandoff(tl)
			}
			if network == "unix" && rep.Address != "" {
				// The primary may bind relative to the socket's directory:
				// the socket's own name for itself is then not the path.
				tl.addr, _ = parseAddr(rep.Address)
			}
			ln = tl
		} else {
			w.listeners.unlisten(w, rep.Key)
		}
	}
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	w.reportListening(addressOf(network, ln.Addr()))
	return ln, nil
}

// listenPacketSelf is ListenPacket in a worker.
func (w *Worker) listenPacketSelf(ctx context.Context, lc *ListenConfig, network, address string) (net.PacketConn, error) {
	if lc.Exclusive {
		pc, err := lc.bindPacket(ctx, network, address)
		if err != nil {
			return nil, err
		}
		w.reportListening(addressOf(network, pc.LocalAddr()))
		return w.listeners.trackPacket(pc, 0), nil
	}
	ref := w.listeners.takeIndex(joinNetwork(network, address))
	rep, h, err := w.listeners.request(ctx, w, listenRequest{Network: network, Address: address, Index: ref.index, ReusePort: lc.ReusePort, ReuseAddr: lc.ReuseAddr, Packet: true})
	if err != nil {
		w.listeners.releaseIndex(ref)
		return nil, err
	}
	w.listeners.keepIndex(rep.Key, ref)
	pc, err := packetConnFromHandle(h)
	if err != nil {
		w.listeners.unlisten(w, rep.Key)
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	w.reportListening(addressOf(network, pc.LocalAddr()))
	return w.listeners.trackPacket(pc, rep.Key), nil
}
