package clusternet

// Runs in the primary: the round-robin scheduler (SchedRR).
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

import (
	"syscall"
	"time"
)

// rrWindow is how many connections a worker may have queued; a queue
// that has not shrunk for rrStaleAfter is taken back.
const (
	rrWindow     = 32
	rrStaleAfter = 250 * time.Millisecond
)

// subscription is one worker's use of a shared address.
type subscription struct {
	sa *sharedAddr
	w  *Worker

	// modeRR: the handoff socket (see above) and what is queued in it.
	handoff bool        // out and peer are open
	out     sysHandle   // the primary's end: connections are sent here
	peer    sysHandle   // the primary's copy of the worker's end: measured, and read to take back
	active  bool        // the worker asked for connections and was not paused since
	jammed  bool        // a send failed: none until the next look at the queues
	window  int         // connections it may have queued
	queued  int         // queued at the last look, plus those sent since
	since   time.Time   // when its queue was last seen empty or shrinking
	deal    []sysHandle // distribute's share for it
	records []byte      // handOver's records

	// modeRR with a Node worker (primary_node.go): newconn messages on its
	// channel instead of the handoff socket, nodeInflight of them not yet
	// answered; window bounds them.
	node         *nodeWorker
	nodeInflight int

	// modeOwn: the primary's copy of the worker's socket, kept so that Run
	// can hand it, queue and all, to the next worker when this was the last.
	own sharedSocket
}

// room returns how many more connections sub may be sent now, looking at
// its queue again when the count says it is full. Called with sa.mu held.
func (sub *subscription) room() int {
	if !sub.active || sub.jammed {
		return 0
	}
	if sub.node != nil {
		return max(0, sub.window-sub.nodeInflight)
	}
	if sub.queued >= sub.window {
		sub.look()
	}
	return max(0, sub.window-sub.queued)
}

// look counts what is queued for the worker; what left the queue since the
// last look, the worker accepted. Called with sa.mu held.
func (sub *subscription) look() {
	n, err := queuedConns(sub.peer)
	if err != nil {
		return // the socket is the primary's own: keep the count
	}
	if n < sub.queued {
		sub.w.stats.accepted.Add(uint64(sub.queued - n))
	}
	if n < sub.queued || n == 0 {
		sub.since = time.Now()
	}
	sub.queued = n
}

// handOver sends the worker hs, whose copies handOver closes in the
// primary. It returns those the handoff socket did not take. Called with
// sa.mu held.
func (sub *subscription) handOver(hs []sysHandle) []sysHandle {
	if sub.node != nil {
		return sub.node.handOver(sub, hs)
	}
	records := sub.records[:0]
	for i := range hs {
		record := recordConn
		if sub.queued+i+1 >= sub.window {
			record = recordConnLast
		}
		records = append(records, record)
	}
	sub.records = records
	sent, err := sendConns(sub.out, hs, records)
	if sent > 0 {
		if sub.queued == 0 {
			sub.since = time.Now()
		}
		sub.queued += sent
		sub.w.stats.handed.Add(uint64(sent))
	}
	if sent > 0 || err != nil {
		sub.sa.watchQueues()
	}
	if err != nil {
		sub.jammed = true
		return hs[sent:]
	}
	return nil
}

// takeBack returns the connections queued for the worker and closes the
// handoff socket if close. Called with sa.mu held.
func (sub *subscription) takeBack(close bool) []sysHandle {
	if !sub.handoff {
		return nil
	}
	hs := recvQueued(sub.peer)
	if taken := sub.queued - len(hs); taken > 0 {
		sub.w.stats.accepted.Add(uint64(taken))
	}
	sub.queued = 0
	if close {
		closeHandles([]sysHandle{sub.out, sub.peer})
		sub.handoff = false
	}
	return hs
}

// openHandoff makes sub's handoff socket and returns the worker's copy of
// its end.
func (sub *subscription) openHandoff() (sysHandle, error) {
	out, peer, err := newHandoff()
	if err != nil {
		return out, err
	}
	h, err := dupFD(peer)
	if err != nil {
		closeHandles([]sysHandle{out, peer})
		return h, err
	}
	sub.out, sub.peer, sub.handoff = out, peer, true
	return h, nil
}

// demand applies a worker's demand: it accepts, with a window of n.
func (sa *sharedAddr) demand(sub *subscription, n int) error {
	if n < 1 || n > maxFrameHandles {
		return protocolErrorf("worker asks for a window of %d connections", n)
	}
	sa.mu.Lock()
	defer sa.mu.Unlock()
	sub.w.mu.Lock()
	leaving := sub.w.disconnecting
	sub.w.mu.Unlock()
	if sa.closed || leaving || !sub.handoff {
		return nil
	}
	sub.active, sub.jammed, sub.window = true, false, n
	sub.look()
	sa.flushPending()
	sa.cond.Signal()
	return nil
}

// room returns how many more connections the workers may be sent now.
// Called with sa.mu held.
func (sa *sharedAddr) room() int {
	r := 0
	for _, sub := range sa.subs {
		r += sub.room()
	}
	return r
}

// flushPending hands out waiting connections. Called with sa.mu held.
func (sa *sharedAddr) flushPending() {
	if len(sa.pending) > 0 {
		sa.pending = sa.distribute(sa.pending)
	}
}

// distribute deals hs to the workers in turn, each up to its room, sends
// each its share in one go, and returns those nobody could take. Called with
// sa.mu held.
func (sa *sharedAddr) distribute(hs []sysHandle) []sysHandle {
	rooms := sa.rooms[:0]
	for _, sub := range sa.subs {
		rooms = append(rooms, sub.room())
	}
	sa.rooms = rooms
	n, dealt := len(sa.subs), 0
	for dealt < len(hs) {
		i := 0
		for i < n && rooms[(sa.next+i)%n] == 0 {
			i++
		}
		if i == n {
			break
		}
		i = (sa.next + i) % n
		sa.subs[i].deal = append(sa.subs[i].deal, hs[dealt])
		rooms[i]--
		dealt++
		sa.next = (i + 1) % n
	}
	var rest []sysHandle
	for _, sub := range sa.subs {
		if len(sub.deal) > 0 {
			rest = append(rest, sub.handOver(sub.deal)...)
			sub.deal = sub.deal[:0]
		}
	}
	return append(rest, hs[dealt:]...)
}

// watchQueues makes sure the queues are looked at again after a while.
// Called with sa.mu held.
func (sa *sharedAddr) watchQueues() {
	if sa.watch == nil && !sa.closed {
		sa.watch = time.AfterFunc(rrStaleAfter/2, sa.checkQueues)
	}
}

// checkQueues takes back the queue of every worker that has not accepted
// for rrStaleAfter, sends those connections to the others, and keeps
// watching while any queue is not empty.
func (sa *sharedAddr) checkQueues() {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	sa.watch = nil
	if sa.closed {
		return
	}
	now := time.Now()
	again := false
	for _, sub := range sa.subs {
		sub.jammed = false
		if sub.queued == 0 {
			continue
		}
		sub.look()
		if sub.queued > 0 && now.Sub(sub.since) >= rrStaleAfter {
			sa.pending = append(sub.takeBack(false), sa.pending...)
			sub.active = false
			sub.w.ch.send(outFrame{b: keyFrame(frameReclaimed, sa.key, 0, false)})
		}
		again = again || sub.queued > 0
	}
	sa.flushPending()
	sa.cond.Signal()
	if again {
		sa.watchQueues()
	}
}

// acceptLoop accepts connections while workers have credit and hands them out.
func (sa *sharedAddr) acceptLoop(rc syscall.RawConn) {
	defer close(sa.done)
	var delay time.Duration
	for {
		sa.mu.Lock()
		room := 0
		for !sa.closed {
			sa.flushPending()
			if len(sa.pending) == 0 {
				if room = sa.room(); room > 0 {
					break
				}
			}
			sa.cond.Wait()
		}
		if sa.closed {
			sa.mu.Unlock()
			return
		}
		sa.mu.Unlock()

		hs, err := acceptBatch(rc, min(room, maxFrameHandles))
		if len(hs) > 0 {
			delay = 0
			sa.mu.Lock()
			if sa.closed {
				sa.dropConns(hs)
			} else if rest := sa.distribute(hs); len(rest) > 0 {
				sa.pending = append(sa.pending, rest...)
			}
			sa.mu.Unlock()
		}
		if err != nil {
			if isClosedListenErr(err) {
				return
			}
			// Out of descriptors or memory: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
		}
	}
}

// startPolling returns a RawConn whose Read waits for connections on the
// shared socket. The net package's own RawConn of a listener refuses Read,
// so the accept loop polls a copy of the descriptor wrapped in an *os.File.
func (sa *sharedAddr) startPolling() (syscall.RawConn, error) {
	h, err := dupHandle(sa.sock)
	if err != nil {
		return nil, err
	}
	sa.polled = fileFromHandle(h, "accept")
	return sa.polled.SyscallConn()
}
