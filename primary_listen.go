package clusternet

// Runs in the primary: the addresses it shares with workers. One sharedAddr
// per network and address that workers listen on, created by the first
// worker that asks and closed when the last one leaves; how each worker's
// listen request is answered.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Locks, in the order they are taken: sa.bindMu (modeOwn binds of one
// address, held alone), cluster.mu (the shared addresses and those being
// bound), sa.mu (one address's subscriptions and queues), w.mu (one
// worker's). No bind, name lookup or other call that may wait runs under
// cluster.mu or sa.mu. HACKING.md has the whole order.

// maxListensPerWorker bounds the addresses one worker may hold, so that a
// worker cannot make the primary bind without end.
const maxListensPerWorker = 256

// sharedAddr is the primary's record of one address that it shares with
// workers: the socket it bound (or one per worker, modeOwn), the workers
// that use it, and under SchedRR the connections waiting for them.
type sharedAddr struct {
	id     string // network|address, as workers asked for it
	key    uint32
	mode   shareMode
	packet bool

	network   string
	address   string           // as asked; for modeOwn, the host with the port fixed by the first bind
	sock      sharedSocket     // the listening or datagram socket (not for modeOwn)
	inherited *activatedSocket // sock came from socket activation: never closed
	polled    *os.File         // modeRR: a copy of sock that the accept loop waits on
	boundAt   string           // network|address actually bound, reported to workers

	bindMu sync.Mutex // modeOwn: one bind at a time; guards address and boundAt

	mu      sync.Mutex
	cond    sync.Cond
	subs    []*subscription  // in round-robin order
	next    int              // round-robin cursor
	pending []sysHandle      // accepted, waiting for a worker with room (modeOwn: from a retired socket, for a worker)
	rooms   []int            // distribute's scratch
	watch   *time.Timer      // modeRR: looks at the queues while any is not empty
	hold    *time.Timer      // no worker listens, but Run keeps the address open: closes it at heldAddrTimeout
	spares  []*spare         // modeOwn under Run: sockets of workers that died, for the next ones
	retired []*retiredSocket // modeOwn: sockets of workers that left, accepted on by the primary (primary_reuseport.go)
	rebind  sharedWatch      // modeShared stream sockets: binds the address again if the socket stops listening
	closed  bool
	done    chan struct{} // closed when the accept loop has ended (modeRR)
}

var lastAddrKey uint32 // guarded by cluster.mu

// handleListenFrame handles the listening frames from worker w.
func handleListenFrame(w *Worker, f frame) error {
	switch f.kind {
	case frameListen:
		var req listenRequest
		if err := json.Unmarshal(f.body, &req); err != nil {
			return protocolErrorf("malformed listen request: %v", err)
		}
		rep, h := listenFor(w, req)
		rep.Seq = req.Seq
		body, _ := json.Marshal(rep)
		out := outFrame{b: append(newFrame(frameListenReply, len(body), len(h)), body...), handles: h}
		w.ch.send(out)
	case frameListening:
		var a Address
		if err := json.Unmarshal(f.body, &a); err != nil {
			return protocolErrorf("malformed listening notice: %v", err)
		}
		if err := w.noteListening(a); err != nil {
			return err
		}
		w.postListening(a)
		upgradePoke() // a primary that Upgrade started may now be ready
		if s := runningSupervisor(); s != nil {
			s.kick() // Run may now be ready
		}
	case frameUnlisten:
		key, _, err := parseKeyFrame(f, false)
		if err != nil {
			return err
		}
		if sub := w.takeSub(key); sub != nil {
			// A worker that drains closes its listeners as it leaves:
			// Run keeps the address for the next worker. One that
			// closes a listener otherwise means it.
			sub.sa.unsubscribe(sub, w.leaving() && holdAddrs(), false)
		}
	case frameDemand:
		key, n, err := parseKeyFrame(f, true)
		if err != nil {
			return err
		}
		w.mu.Lock()
		sub := w.subs[key]
		w.mu.Unlock()
		if sub == nil || sub.sa.mode != modeRR {
			return nil // unlistened or never granted: nothing to send
		}
		return sub.sa.demand(sub, n)
	}
	return nil
}

func (w *Worker) takeSub(key uint32) *subscription {
	w.mu.Lock()
	defer w.mu.Unlock()
	sub := w.subs[key]
	delete(w.subs, key)
	return sub
}

// maxListenAttempts bounds how often one listen request starts over
// because other workers closed the address it was about to join.
const maxListenAttempts = 3

// errServerClosed is why a listen request starts over: the shared address it found
// was closed by the time it joined.
var errServerClosed = errors.New("the address was closed meanwhile")

// listenFor binds or shares an address for w. The handle, if any, is the
// worker's socket, closed in the primary once sent.
//
// It runs on w's channel reader, and nothing in it that may wait (a name
// lookup, a bind in a directory on a slow file system, AllowListen) runs
// under a lock that other workers need: a slow address stalls only the
// workers that ask for it.
func listenFor(w *Worker, req listenRequest) (listenReply, []sysHandle) {
	refuse := func(err error) (listenReply, []sysHandle) { return listenReply{Err: toWireError(err)}, nil }
	if err := checkListenNetwork(req.Network, req.Packet); err != nil {
		return refuse(err)
	}
	w.mu.Lock()
	n, leaving := len(w.subs), w.disconnecting
	w.mu.Unlock()
	switch {
	case leaving:
		return refuse(errors.New("the worker is disconnecting"))
	case n >= maxListensPerWorker:
		return refuse(fmt.Errorf("the worker already listens on %d addresses, the most one worker may", n))
	case req.Index < 0 || req.Index >= maxListensPerWorker:
		return refuse(fmt.Errorf("listen index %d: a worker has at most %d listens open", req.Index, maxListensPerWorker))
	}
	if isSocketFile(req.Network, req.Address) {
		path, err := w.socketPath(req.Address)
		if err != nil {
			return refuse(&net.OpError{Op: "listen", Net: req.Network, Addr: strAddr(req.Address), Err: err})
		}
		req.Address = path
	}
	settings := CurrentSettings()
	if allow := settings.AllowListen; allow != nil {
		if err := allow(w, req.Network, req.Address); err != nil {
			return refuse(fmt.Errorf("not allowed: %w", err))
		}
	}
	mode := modeFor(req, SchedulingPolicy())
	for range maxListenAttempts {
		sa, err := findOrBind(req, mode, settings.SocketMode.Perm())
		if err != nil {
			return refuse(err)
		}
		rep, hs, err := sa.subscribe(w, req)
		if errors.Is(err, errServerClosed) {
			continue
		}
		if err != nil {
			return refuse(err)
		}
		return rep, hs
	}
	return refuse(fmt.Errorf("%s %s: other workers closed it each time it was bound; try again", req.Network, req.Address))
}

// modeFor is how the primary shares an address under policy.
func modeFor(req listenRequest, policy Policy) shareMode {
	switch {
	case req.ReusePort && req.Network != "unix":
		return modeOwn
	case req.Packet || req.Network == "unix" && policy == SchedReusePort:
		return modeShared
	case policy == SchedRR:
		return modeRR
	case policy == SchedReusePort:
		return modeOwn
	}
	return modeShared
}

// socketPath returns the socket file path a worker asked for as the
// primary binds it, and as AllowListen sees it: clean, and absolute. A
// relative path is the worker's, resolved against the worker's working
// directory, never the primary's (clusternet.Listen sends absolute paths;
// another program may not).
func (w *Worker) socketPath(path string) (string, error) {
	if !filepath.IsAbs(path) {
		dir, err := workingDir(w.proc)
		if err != nil {
			return "", fmt.Errorf("relative socket path %q: %w", path, err)
		}
		path = filepath.Join(dir, path)
	}
	return filepath.Clean(path), nil
}

// addrID is the name of the shared address that answers req: its network
// and address and, for port 0 or SO_REUSEADDR, the index of the listen in
// the worker when it is not the first: a worker's nth such listen shares
// the nth socket, as in Node. A fixed address has one socket otherwise, and
// a worker's second listen on it fails with EADDRINUSE (subscribe), as
// net.Listen's would.
func addrID(req listenRequest) string {
	id := joinNetwork(req.Network, req.Address)
	_, port, err := net.SplitHostPort(req.Address)
	if req.Index != 0 && (req.ReuseAddr || err == nil && (port == "0" || port == "")) {
		id += "#" + strconv.Itoa(req.Index)
	}
	if req.ReuseAddr {
		id += "#reuseaddr" // never shared with sockets bound without it
	}
	return id
}

// binding is an address that a worker's listen is binding, outside
// cluster.mu: the other workers that ask for it meanwhile wait for it.
type binding struct {
	done chan struct{} // closed when the bind is over
	err  error         // its error, set before done is closed
}

// findOrBind returns the shared address for req's address, binding it if no worker
// listens there yet.
func findOrBind(req listenRequest, mode shareMode, perm os.FileMode) (*sharedAddr, error) {
	id := addrID(req)
	for {
		cluster.mu.Lock()
		if sa := cluster.addrs[id]; sa != nil {
			cluster.mu.Unlock()
			if sa.mode != mode || sa.packet != req.Packet {
				return nil, fmt.Errorf("%s %s is already shared with other workers in %s mode; this listen asks for %s", req.Network, req.Address, sa.mode, mode)
			}
			return sa, nil
		}
		if b := cluster.binding[id]; b != nil {
			cluster.mu.Unlock()
			<-b.done
			if b.err != nil {
				return nil, b.err
			}
			continue
		}
		b := &binding{done: make(chan struct{})}
		cluster.binding[id] = b
		cluster.mu.Unlock()

		sa, err := newSharedAddr(req, mode, perm)
		cluster.mu.Lock()
		delete(cluster.binding, id)
		if err == nil {
			lastAddrKey++
			sa.key = lastAddrKey
			cluster.addrs[id] = sa
		}
		cluster.mu.Unlock()
		b.err = err
		close(b.done)
		return sa, err
	}
}

// subscribe makes w a user of sa and returns the reply and the handle for
// w. It returns errServerClosed if sa was closed before w could join.
func (sa *sharedAddr) subscribe(w *Worker, req listenRequest) (listenReply, []sysHandle, error) {
	if w.usesServer(sa) {
		// One subscription per worker and address (w.subs is keyed by the
		// address): a second listen on the same address fails as it would
		// with net.Listen in one process.
		return listenReply{}, nil, os.NewSyscallError("bind", syscall.EADDRINUSE)
	}
	sub := &subscription{sa: sa, w: w}
	var boundAt string
	if sa.mode != modeOwn {
		boundAt = sa.boundAt // set by the bind, before sa was published
	}
	var h sysHandle
	var err error
	held := false // h is open
	switch sa.mode {
	case modeRR:
		h, err = sub.openHandoff()
	case modeShared:
		// Copied below, where the worker joins: the watch may replace
		// the socket (primary_shared_watch_unix.go) until then.
	case modeOwn:
		// The socket the last worker left, with what is queued on it
		// (Run holds it: unsubscribe), or a new one.
		// A reload's replacement takes over the socket of the worker it
		// replaces: both accept on it until the old one leaves, and what
		// is queued there stays for the new one, where closing it would
		// reset it (the kernel migrates a closing SO_REUSEPORT socket's
		// queue only with net.ipv4.tcp_migrate_req).
		if sub.own = sa.takeOwn(w.replaces); sub.own == nil {
			sub.own = sa.takeSpare()
		}
		if sub.own == nil {
			sub.own = sa.takeRetired()
		}
		if sub.own != nil {
			h, err = dupHandle(sub.own)
			sa.bindMu.Lock() // guards boundAt under modeOwn
			boundAt = sa.boundAt
			sa.bindMu.Unlock()
		} else {
			h, sub.own, boundAt, err = sa.bindOwn(req)
		}
	}
	if err != nil {
		if sa.closeIfUnused() {
			err = errServerClosed
		}
		return listenReply{}, nil, err
	}
	held = sa.mode != modeShared

	cluster.mu.Lock()
	sa.mu.Lock()
	closed := sa.closed
	if !closed && sa.mode == modeShared {
		h, err = dupHandle(sa.sock)
		held = err == nil
	}
	if !closed && err == nil {
		if sa.hold != nil {
			sa.hold.Stop() // held for this worker
			sa.hold = nil
		}
		sa.subs = append(sa.subs, sub)
		w.mu.Lock()
		w.subs[sa.key] = sub
		w.mu.Unlock()
		if sa.mode == modeOwn {
			sa.flushOwnLocked() // what waited for a worker
		}
	}
	sa.mu.Unlock()
	cluster.mu.Unlock()
	switch {
	case closed:
		err = errServerClosed
	case err != nil && sa.closeIfUnused():
		err = errServerClosed // its socket was closed under the dup
	}
	if err != nil {
		if held {
			closeHandles([]sysHandle{h})
		}
		if sub.handoff {
			closeHandles([]sysHandle{sub.out, sub.peer})
		}
		if sub.own != nil {
			sub.own.Close()
		}
		return listenReply{}, nil, err
	}
	return listenReply{Key: sa.key, Mode: sa.mode, Address: boundAt}, []sysHandle{h}, nil
}

// usesServer reports whether w already listens through sa.
func (w *Worker) usesServer(sa *sharedAddr) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.subs[sa.key]
	return ok
}

// newSharedAddr binds the address for the first worker, without cluster.mu.
func newSharedAddr(req listenRequest, mode shareMode, socketMode os.FileMode) (*sharedAddr, error) {
	sa := &sharedAddr{id: addrID(req), mode: mode, packet: req.Packet, network: req.Network, address: req.Address, done: make(chan struct{})}
	sa.cond.L = &sa.mu
	if mode == modeOwn {
		// Each worker gets a socket of its own; the first bind fixes the
		// port that ":0" gives the next ones. After an upgrade the first
		// workers take the old primary's workers' sockets.
		sa.takeInherited()
		return sa, nil
	}
	if !sa.takeInherited() { // the old primary's socket, after an upgrade
		if err := sa.bindShared(req, socketMode); err != nil {
			return nil, err
		}
	}
	if mode == modeShared && !req.Packet {
		sa.watchShared(req.Backlog, socketMode)
	}
	if mode == modeRR {
		rc, err := sa.startPolling()
		if err != nil {
			sa.release(nil)
			return nil, err
		}
		go sa.acceptLoop(rc)
	}
	return sa, nil
}

// bindShared binds the socket that sa shares, or takes it from socket
// activation.
func (sa *sharedAddr) bindShared(req listenRequest, socketMode os.FileMode) error {
	if s := takeActivated(req.Network, req.Address, req.Packet); s != nil {
		sock, err := asShared(s.conn())
		if err != nil {
			s.release()
			return err
		}
		sa.inherited, sa.sock = s, sock
		sa.boundAt = joinNetwork(req.Network, s.localAddr().String())
		return nil
	}
	var err error
	if isSocketFile(req.Network, req.Address) {
		sa.sock, err = bindSocketFile(req.Address, socketMode, req.Backlog)
		sa.boundAt = joinNetwork(req.Network, req.Address)
		return err
	}
	var c io.Closer
	var addr net.Addr
	if req.Packet {
		pc, err := bindPacket(req.Network, req.Address, false, req.ReuseAddr)
		if err != nil {
			return err
		}
		c, addr = pc, pc.LocalAddr()
	} else {
		ln, err := bindStream(req.Network, req.Address, req.Backlog, false)
		if err != nil {
			return err
		}
		c, addr = ln, ln.Addr()
	}
	if sa.sock, err = park(c); err != nil {
		return err
	}
	sa.boundAt = joinNetwork(req.Network, addr.String())
	return nil
}

// sharedSocket is a socket the primary shares with workers.
type sharedSocket interface {
	syscall.Conn
	Close() error
}

func asShared(c io.Closer) (sharedSocket, error) {
	if s, ok := c.(sharedSocket); ok {
		return s, nil
	}
	return nil, fmt.Errorf("clusternet: a %T has no descriptor to share", c)
}

// bindOwn binds a new SO_REUSEPORT socket for one worker and returns it,
// the primary's copy of it (parked), and the address it is bound to. The
// binds of one address take turns (the first fixes the port of the next),
// under sa.bindMu alone.
func (sa *sharedAddr) bindOwn(req listenRequest) (sysHandle, sharedSocket, string, error) {
	sa.bindMu.Lock()
	defer sa.bindMu.Unlock()
	var c interface{ Close() error }
	var local net.Addr
	if req.Packet {
		pc, err := bindPacket(req.Network, sa.address, true, false)
		if err != nil {
			return 0, nil, "", err
		}
		c, local = pc, pc.LocalAddr()
	} else {
		ln, err := bindStream(req.Network, sa.address, req.Backlog, true)
		if err != nil {
			return 0, nil, "", err
		}
		c, local = ln, ln.Addr()
	}
	if sa.boundAt == "" {
		sa.boundAt = joinNetwork(req.Network, local.String())
		if host, port, err := net.SplitHostPort(sa.address); err == nil && (port == "0" || port == "") {
			_, bound, _ := net.SplitHostPort(local.String())
			sa.address = net.JoinHostPort(host, bound)
		}
	}
	own, err := park(c) // closes c
	if err != nil {
		return 0, nil, "", err
	}
	h, err := dupHandle(own)
	if err != nil {
		own.Close()
		return 0, nil, "", err
	}
	return h, own, sa.boundAt, nil
}

// takeOwn moves the primary's copy of old's modeOwn socket out of old's
// subscription, for the worker that replaces it, or returns nil.
func (sa *sharedAddr) takeOwn(old *Worker) sharedSocket {
	if old == nil {
		return nil
	}
	sa.mu.Lock()
	defer sa.mu.Unlock()
	for _, sub := range sa.subs {
		if sub.w == old && sub.own != nil {
			s := sub.own
			sub.own = nil
			return s
		}
	}
	return nil
}

// spare is the socket of a modeOwn worker that died under Run, kept open,
// queue and all, for the worker Run forks in its place: closing it would
// reset what is queued there (unless the kernel migrates it,
// net.ipv4.tcp_migrate_req). New connections the kernel hashes to it wait
// for that worker too, so it is kept only for spareHoldTimeout, past a
// first respawn's backoff and start; a slot that backs off longer is
// crash-looping, and its spare is closed. The last socket of an address is
// kept as long as Run holds the address.
type spare struct {
	s sharedSocket
	t *time.Timer
}

const spareHoldTimeout = 2 * time.Second

// keepSpareLocked keeps s for the next worker, for d. Called with sa.mu held.
func (sa *sharedAddr) keepSpareLocked(s sharedSocket, d time.Duration) {
	sp := &spare{s: s}
	sp.t = time.AfterFunc(d, func() {
		sa.mu.Lock()
		i := slices.Index(sa.spares, sp)
		if i >= 0 {
			sa.spares = slices.Delete(sa.spares, i, i+1)
		}
		// Others serve: their workers take what is queued there.
		kept := i >= 0 && sa.adoptersLocked() && !sa.closed && !reusePortMigrates() && !upgradedAway() && sa.retireLocked(sp.s)
		sa.mu.Unlock()
		if i >= 0 && !kept {
			sp.s.Close()
		}
	})
	sa.spares = append(sa.spares, sp)
}

// takeSpare returns the oldest socket kept for the next worker, or nil.
func (sa *sharedAddr) takeSpare() sharedSocket {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if len(sa.spares) == 0 {
		return nil
	}
	sp := sa.spares[0]
	sa.spares = slices.Delete(sa.spares, 0, 1)
	sp.t.Stop()
	return sp.s
}

// closeIfUnused closes a shared address that no worker uses, and reports whether
// it had been closed already.
func (sa *sharedAddr) closeIfUnused() bool {
	cluster.mu.Lock()
	sa.mu.Lock()
	closed, unused := sa.closed, len(sa.subs) == 0
	sa.mu.Unlock()
	var release func()
	if unused && !closed {
		release = sa.closeLocked()
	}
	cluster.mu.Unlock()
	if release != nil {
		release()
	}
	return closed
}

// unsubscribe removes a worker from the shared address, gives the
// connections it had not taken to the others, and closes the shared address
// when nobody is left, unless hold: then the address stays open, and its
// accepted connections pending, for up to heldAddrTimeout, until a worker
// listens there again. A modeOwn address keeps its last worker's socket
// then, and with died (the worker did not leave on purpose: Run forks
// another), any worker's, for a while (spare).
func (sa *sharedAddr) unsubscribe(sub *subscription, hold, died bool) {
	cluster.mu.Lock()
	sa.mu.Lock()
	for i, s := range sa.subs {
		if s == sub {
			sa.subs = append(sa.subs[:i], sa.subs[i+1:]...)
			if sa.next > i {
				sa.next--
			}
			break
		}
	}
	sa.pending = append(sub.takeBack(true), sa.pending...)
	sub.active = false
	empty := len(sa.subs) == 0
	if !empty && sa.mode == modeRR {
		sa.flushPending()
	}
	var drop sharedSocket // closed below, without the locks
	if sub.own != nil {
		switch {
		case !sa.closed && sa.adoptersLocked() && !reusePortMigrates() && !upgradedAway() && sa.retireLocked(sub.own):
			// The other workers get what is queued there, and what the
			// kernel still hashes to it (primary_reuseport.go).
		case hold && !sa.closed && empty:
			sa.keepSpareLocked(sub.own, heldAddrTimeout)
		case hold && !sa.closed && died:
			sa.keepSpareLocked(sub.own, spareHoldTimeout)
		default:
			drop = sub.own
		}
		sub.own = nil
	}
	if !empty && sa.mode == modeOwn {
		sa.flushOwnLocked() // what the worker left in its handoff socket
	}
	held := empty && hold && !sa.closed && (sa.mode != modeOwn || len(sa.spares) > 0 || len(sa.retired) > 0)
	if held && sa.hold == nil {
		sa.hold = time.AfterFunc(heldAddrTimeout, func() { sa.closeIfUnused() })
	}
	sa.mu.Unlock()
	var release func()
	if empty && !held {
		release = sa.closeLocked()
	}
	cluster.mu.Unlock()
	if drop != nil {
		drop.Close()
	}
	if release != nil {
		release()
	}
}

// closeLocked takes the shared address out of the cluster and marks it closed, so
// that no worker joins it any more. It returns the function that closes
// its socket (removing a Unix socket's file) and drops the connections
// nobody took, to be called without cluster.mu: removing a file is file
// system work. Called with cluster.mu held, once.
func (sa *sharedAddr) closeLocked() (release func()) {
	if cluster.addrs[sa.id] == sa {
		delete(cluster.addrs, sa.id)
	}
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if sa.closed {
		return func() {}
	}
	sa.closed = true
	pending := sa.pending
	sa.pending = nil
	owned := []sharedSocket{}
	for _, sp := range sa.spares {
		sp.t.Stop()
		owned = append(owned, sp.s)
	}
	sa.spares = nil
	retired := sa.closeRetiredLocked()
	for _, sub := range sa.subs {
		pending = append(pending, sub.takeBack(true)...)
		if sub.own != nil {
			owned = append(owned, sub.own)
			sub.own = nil
		}
	}
	if sa.watch != nil {
		sa.watch.Stop()
	}
	if sa.hold != nil {
		sa.hold.Stop()
	}
	sa.stopSharedWatch()
	sa.cond.Broadcast()
	return func() {
		for _, s := range owned {
			s.Close()
		}
		closeRetired(retired)
		sa.release(pending)
	}
}

// release closes what a closed shared address holds: the connections nobody took,
// its socket, and the accept loop's copy of it.
func (sa *sharedAddr) release(pending []sysHandle) {
	sa.dropConns(pending)
	if sa.polled != nil {
		sa.polled.Close() // wakes the accept loop
	}
	switch {
	case sa.inherited != nil:
		sa.inherited.release() // kept open for the next worker that asks
	case sa.sock != nil:
		sa.sock.Close()
	}
	if sa.mode != modeRR || sa.polled == nil {
		close(sa.done)
	}
}

// dropWorker removes a worker whose channel is closed from every shared address.
func dropWorker(w *Worker) {
	hold, died := holdAddrs(), !w.leaving()
	for _, sub := range w.subscriptions(true) {
		sub.sa.unsubscribe(sub, hold, died)
	}
}

// heldAddrTimeout bounds how long Run keeps an address open after its last
// worker left: longer than a respawn's backoff and start, short enough that
// an address a new release no longer listens on does not take connections
// for long.
const heldAddrTimeout = 30 * time.Second

// holdAddrs reports whether an address whose last worker leaves stays open
// for the next (while Run serves).
func holdAddrs() bool {
	s := runningSupervisor()
	return s != nil && s.holding()
}

// leaving reports whether w is on its way out: disconnected by the primary,
// leaving on purpose, or draining on a signal.
func (w *Worker) leaving() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.disconnecting || w.exitedAfterDisconnect || w.signalled
}

// subscriptions returns w's subscriptions, and forgets them with clear.
func (w *Worker) subscriptions(clear bool) []*subscription {
	w.mu.Lock()
	defer w.mu.Unlock()
	subs := make([]*subscription, 0, len(w.subs))
	for key, sub := range w.subs {
		subs = append(subs, sub)
		if clear {
			delete(w.subs, key)
		}
	}
	return subs
}

// stopHandoffs sends a worker that is being disconnected or killed no more
// connections; those it has not taken come back when it unlistens or dies.
func stopHandoffs(w *Worker) {
	for _, sub := range w.subscriptions(false) {
		sa := sub.sa
		sa.mu.Lock()
		sub.active = false
		sub.window = 0
		sa.mu.Unlock()
	}
}

// closeAllAddrs closes what is left when the cluster disconnects.
func closeAllAddrs() {
	cluster.mu.Lock()
	var releases []func()
	for _, sa := range cluster.addrs {
		releases = append(releases, sa.closeLocked())
	}
	cluster.mu.Unlock()
	for _, release := range releases {
		release()
	}
}
