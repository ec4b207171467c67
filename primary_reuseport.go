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
// deals what it accepts to the address's workers, round robin, as frameAdopt
// frames on their channels: a worker's listener returns an adopted connection
// from Accept as its own. A worker that later listens on the address (Run
// refilling the slot, a scale up) takes a retired socket back as its own, and
// the primary stops accepting there. A worker that closes its listener with
// adopted connections it has not returned from Accept gives them back
// (frameAdopt, worker → primary) and the primary deals them to the others;
// with no worker left they wait in sa.pending for the next. So only the
// connections a worker had returned from Accept die with it, as under SchedRR.
//
// The cost: the connections the kernel hashes to a retired socket take the
// SchedRR path (an accept and a descriptor passed over the channel), until a
// worker takes the socket back.

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
				sa.dealOwnLocked(hs, nil)
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
// workers, round robin, skipping not and those on their way out; with none
// to take them they wait in sa.pending. Called with sa.mu held.
func (sa *sharedAddr) dealOwnLocked(hs []sysHandle, not *Worker) {
	var takers []*subscription
	for _, sub := range sa.subs {
		if sub.w != not && !sub.w.leaving() {
			takers = append(takers, sub)
		}
	}
	if len(takers) == 0 {
		sa.pending = append(sa.pending, hs...)
		return
	}
	shares := make([][]sysHandle, len(takers))
	for _, h := range hs {
		i := sa.next % len(takers)
		sa.next++
		shares[i] = append(shares[i], h)
	}
	for i, share := range shares {
		for len(share) > 0 {
			n := min(len(share), maxFrameHandles)
			b := binary.BigEndian.AppendUint32(newFrame(frameAdopt, 4, n), sa.key)
			takers[i].w.ch.send(outFrame{b: b, handles: share[:n:n]}) // closes them once sent, or on error
			takers[i].w.stats.handed.Add(uint64(n))
			share = share[n:]
		}
	}
}

// flushOwnLocked deals the connections waiting for a worker of a modeOwn
// address. Called with sa.mu held.
func (sa *sharedAddr) flushOwnLocked() {
	if len(sa.pending) > 0 {
		hs := sa.pending
		sa.pending = nil
		sa.dealOwnLocked(hs, nil)
	}
}

// adoptReturned handles connections worker w gives back (frameAdopt from a
// worker): its listener for key closed before Accept returned them. They
// go to the address's other workers.
func adoptReturned(w *Worker, f frame) error {
	key, _, err := parseKeyFrame(frame{kind: f.kind, body: f.body}, false)
	if err == nil && len(f.handles) == 0 {
		err = protocolErrorf("connections given back without a connection")
	}
	if err != nil {
		closeHandles(f.handles)
		return err
	}
	cluster.mu.Lock()
	var sa *sharedAddr
	for _, a := range cluster.addrs {
		if a.key == key {
			sa = a
			break
		}
	}
	cluster.mu.Unlock()
	if sa == nil || sa.mode != modeOwn {
		closeHandles(f.handles) // the address is gone
		return nil
	}
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if sa.closed {
		closeHandles(f.handles)
		return nil
	}
	sa.dealOwnLocked(f.handles, w)
	return nil
}
