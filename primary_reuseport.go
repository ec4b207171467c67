package clusternet

// Runs in the primary: what SchedReusePort does with a worker's socket when
// the worker leaves for good while others stay (it is disconnected, dies,
// or Run scales the cluster down): the socket is retired, not closed.
//
// Closing a SO_REUSEPORT socket resets the connections queued on it, unless
// the kernel moves them to the sockets that remain (net.ipv4.tcp_migrate_req,
// Linux 5.14 and later, off by default). Where it does, the primary closes
// the socket. Where it does not, the primary keeps it, still in the group so
// that the kernel still hashes connections to it, accepts on it itself, and
// deals what it accepts to the address's workers, round robin, over a
// handoff socket per worker as SchedRR's (primary_rr.go; frameAdopt gives
// it to the worker): a worker's listener returns those connections from
// Accept ahead of its own. What a worker leaves in its handoff socket, the
// primary takes back when it unlistens or dies and deals to the others; with
// no worker left it waits in sa.pending for the next. A worker that later
// listens on the address (Run refilling the slot, a scale up) takes a retired
// socket back as its own, and the primary stops accepting there. So only the
// connections a worker had returned from Accept die with it, as under SchedRR.
//
// The cost: the connections the kernel hashes to a retired socket take the
// SchedRR path (the primary's accept and a descriptor passed over a handoff
// socket), until a worker takes the socket back.

import (
	"encoding/binary"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// retiredSocket is a modeOwn socket whose worker left: the primary accepts
// on it and deals the connections to the address's workers.
type retiredSocket struct {
	s      sharedSocket
	polled *os.File      // the copy the accept loop waits on; closed to end it
	stop   atomic.Bool   // set before polled is closed
	done   chan struct{} // closed when the accept loop has ended
}

// end ends the accept loop and waits for it.
func (r *retiredSocket) end() {
	r.stop.Store(true)
	r.polled.Close() // wakes the accept loop: its next read fails
	<-r.done
}

// adopted counts the connections accepted on retired sockets.
var adopted atomic.Uint64

// reusePortMigrates reports whether the kernel moves the queue of a closing
// SO_REUSEPORT socket to the others; read once.
var reusePortMigrates = sync.OnceValue(func() bool {
	on, _ := migratesReusePortQueues()
	return on
})

// reusePortQueues is ClusterStats.ReusePortQueues.
func reusePortQueues() string {
	if reusePortMigrates() {
		return "kernel"
	}
	return "primary"
}

// retireLocked keeps s, whose worker left, and starts accepting on it. It
// reports false if it could not (s is then still the caller's). Called with
// sa.mu held.
func (sa *sharedAddr) retireLocked(s sharedSocket) bool {
	if runtime.GOOS == "windows" {
		return false // no SO_REUSEPORT sockets to retire, nor descriptors to deal
	}
	h, err := dupHandle(s)
	if err != nil {
		return false
	}
	r := &retiredSocket{s: s, polled: fileFromHandle(h, "retired"), done: make(chan struct{})}
	rc, err := r.polled.SyscallConn()
	if err != nil {
		r.polled.Close()
		return false
	}
	sa.retired = append(sa.retired, r)
	go sa.acceptRetired(r, rc)
	return true
}

// acceptRetired accepts on a retired socket until it is taken back or the
// address closes, and deals what it accepts.
func (sa *sharedAddr) acceptRetired(r *retiredSocket, rc syscall.RawConn) {
	defer close(r.done)
	var delay time.Duration
	for {
		hs, err := acceptBatch(rc, maxFrameHandles)
		if len(hs) > 0 {
			adopted.Add(uint64(len(hs)))
			sa.mu.Lock()
			if sa.closed {
				closeHandles(hs)
			} else {
				sa.dealOwnLocked(hs)
			}
			sa.mu.Unlock()
		}
		if err != nil {
			if r.stop.Load() || isClosedListenErr(err) {
				return
			}
			// Out of descriptors or memory: the connections wait in the
			// queue; back off as the SchedRR accept loop does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
	}
}

// takeRetired ends the accepting on the oldest retired socket and returns
// it, for a worker that listens on the address, or nil.
func (sa *sharedAddr) takeRetired() sharedSocket {
	sa.mu.Lock()
	if len(sa.retired) == 0 {
		sa.mu.Unlock()
		return nil
	}
	r := sa.retired[0]
	sa.retired = slices.Delete(sa.retired, 0, 1)
	sa.mu.Unlock()
	r.end()
	return r.s
}

// closeRetiredLocked takes the retired sockets out, for release to close.
// Called with sa.mu held.
func (sa *sharedAddr) closeRetiredLocked() []*retiredSocket {
	rs := sa.retired
	sa.retired = nil
	return rs
}

// closeRetired closes retired sockets and waits for their accept loops.
func closeRetired(rs []*retiredSocket) {
	for _, r := range rs {
		r.end()
		r.s.Close()
	}
}

// dealOwnLocked deals connections accepted for a modeOwn address to its
// workers, round robin, skipping those on their way out, over a handoff
// socket per worker, as SchedRR's (primary_rr.go), which the first
// connection for a worker opens and gives it (frameAdopt): what a worker
// leaves there the primary takes back when it unlistens or dies
// (unsubscribe), so a connection is lost only if its worker dies after
// Accept took it. With no worker to take them, or a handoff socket full,
// they wait in sa.pending for the next deal. Called with sa.mu held.
func (sa *sharedAddr) dealOwnLocked(hs []sysHandle) {
	hs = append(sa.pending, hs...)
	sa.pending = nil
	var takers []*subscription
	for _, sub := range sa.subs {
		if !sub.canAdopt() {
			continue
		}
		if !sub.handoff {
			h, err := sub.openHandoff()
			if err != nil {
				continue
			}
			b := binary.BigEndian.AppendUint32(newFrame(frameAdopt, 4, 1), sa.key)
			if sub.w.ch.send(outFrame{b: b, handles: []sysHandle{h}}) != nil {
				closeHandles([]sysHandle{sub.out, sub.peer})
				sub.handoff = false
				continue
			}
		}
		takers = append(takers, sub)
	}
	if len(takers) == 0 {
		sa.pending = hs
		return
	}
	for i := range takers {
		takers[i].deal = takers[i].deal[:0]
	}
	for _, h := range hs {
		sub := takers[sa.next%len(takers)]
		sa.next++
		sub.deal = append(sub.deal, h)
	}
	for _, sub := range takers {
		if len(sub.deal) == 0 {
			continue
		}
		records := sub.records[:0]
		for range sub.deal {
			records = append(records, recordConn)
		}
		sub.records = records
		sent, _ := sendConns(sub.out, sub.deal, records)
		if sent > 0 {
			sub.queued += sent
			sub.w.stats.handed.Add(uint64(sent))
		}
		sa.pending = append(sa.pending, sub.deal[sent:]...)
		sub.deal = sub.deal[:0]
	}
}

// canAdopt reports whether sub's worker can be dealt connections from a
// retired socket: a Go worker (a Node worker speaks Node's protocol, which
// has no handoff socket beside a listener of its own) not on its way out.
func (sub *subscription) canAdopt() bool { return sub.w.node == nil && !sub.w.leaving() }

// adoptersLocked reports whether a worker of sa could be dealt connections
// from a retired socket: otherwise a socket is closed, not retired. Called
// with sa.mu held.
func (sa *sharedAddr) adoptersLocked() bool {
	return slices.ContainsFunc(sa.subs, (*subscription).canAdopt)
}

// flushOwnLocked deals the connections waiting for a worker of a modeOwn
// address. Called with sa.mu held.
func (sa *sharedAddr) flushOwnLocked() {
	if len(sa.pending) > 0 {
		sa.dealOwnLocked(nil)
	}
}
