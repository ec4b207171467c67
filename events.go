package clusternet

import "sync"

// dispatcher runs event handlers one at a time, in the order the events were
// posted. Its goroutine exists only while there are events to run.
type dispatcher struct {
	mu      sync.Mutex
	queue   []func()
	running bool
}

// events runs every handler of this process: the primary's events for all
// workers, or a worker's events for itself.
var events dispatcher

func (d *dispatcher) post(fn func()) {
	d.mu.Lock()
	d.queue = append(d.queue, fn)
	if !d.running {
		d.running = true
		go d.run()
	}
	d.mu.Unlock()
}

func (d *dispatcher) run() {
	for {
		d.mu.Lock()
		if len(d.queue) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		fn := d.queue[0]
		d.queue[0] = nil
		d.queue = d.queue[1:]
		d.mu.Unlock()
		fn()
	}
}

// inboxLimit bounds what one peer can have queued for the handlers, so that
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
