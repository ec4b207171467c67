package clusternet

// Shared: the event dispatcher (one goroutine, handlers in order), the
// per-peer inbox bound, and handler lists.

import (
	"sync"
	"time"
)

// dispatcher runs event handlers one at a time, in the order the events were
// posted. Its goroutine exists while there are events to run, and lingers
// for dispatcherLinger after the last one: a steady exchange of messages
// would otherwise start a goroutine, and grow its stack, for every message
// (a fifth of the primary's CPU time in a round-trip benchmark).
type dispatcher struct {
	mu      sync.Mutex
	queue   []func()
	running bool
	idle    bool          // the goroutine is lingering, waiting on wake
	wake    chan struct{} // capacity 1: sent to, under mu, only when idle
}

const dispatcherLinger = 100 * time.Millisecond

// events runs every handler of this process: the primary's events for all
// workers, or a worker's events for itself.
var events dispatcher

func (d *dispatcher) post(fn func()) {
	d.mu.Lock()
	d.queue = append(d.queue, fn)
	switch {
	case !d.running:
		d.running = true
		go d.run()
	case d.idle:
		d.idle = false
		d.wake <- struct{}{}
	}
	d.mu.Unlock()
}

func (d *dispatcher) run() {
	var linger *time.Timer
	for {
		d.mu.Lock()
		if len(d.queue) == 0 {
			if d.wake == nil {
				d.wake = make(chan struct{}, 1)
			}
			d.idle = true
			d.mu.Unlock()
			if linger == nil {
				linger = time.NewTimer(dispatcherLinger)
			} else {
				linger.Reset(dispatcherLinger)
			}
			select {
			case <-d.wake: // post cleared idle
				continue
			case <-linger.C:
			}
			d.mu.Lock()
			if len(d.queue) == 0 {
				d.idle = false
				d.running = false
				d.mu.Unlock()
				return
			}
			// An event came as the timer fired: its post cleared idle and
			// sent on wake; take that back.
			<-d.wake
			d.mu.Unlock()
			continue
		}
		fn := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		d.mu.Unlock()
		fn()
	}
}

// inboxMaxMessages and inboxMaxBytes bound what one peer can have queued for the handlers, so that
// a peer sending faster than the handlers run is slowed down through its
// socket instead of growing this process's memory.
const (
	inboxMaxMessages = 1024
	inboxMaxBytes    = 128 << 20
)

// inbox counts one peer's messages waiting for the handlers.
type inbox struct {
	mu    sync.Mutex
	cond  sync.Cond
	count int
	bytes int
}

// reserve waits until a message of n bytes fits. A message larger than the
// byte budget fits once the inbox is empty.
func (ib *inbox) reserve(n int) {
	ib.mu.Lock()
	if ib.cond.L == nil {
		ib.cond.L = &ib.mu
	}
	for ib.count > 0 && (ib.count >= inboxMaxMessages || ib.bytes+n > inboxMaxBytes) {
		ib.cond.Wait()
	}
	ib.count++
	ib.bytes += n
	ib.mu.Unlock()
}

func (ib *inbox) release(n int) {
	ib.mu.Lock()
	ib.count--
	ib.bytes -= n
	if ib.cond.L != nil {
		ib.cond.Signal()
	}
	ib.mu.Unlock()
}

// handlers is a list of event handlers, safe to add to while events run.
type handlers[F any] struct {
	mu  sync.Mutex
	fns []F
}

func (h *handlers[F]) add(fn F) {
	h.mu.Lock()
	h.fns = append(h.fns, fn)
	h.mu.Unlock()
}

func (h *handlers[F]) list() []F {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fns[:len(h.fns):len(h.fns)]
}
