package clusternet

// Shared: the channel between the primary and a worker, above its transport:
// the send queue, its bound, and the writer goroutine that owns the socket.

import (
	"bytes"
	"fmt"
	"math"
	"sync"
)

// outFrame is a frame waiting to be written.
type outFrame struct {
	b       []byte
	buf     *bytes.Buffer // holds b, if pooled: returned to the pool once written or dropped
	handles []sysHandle
	keep    bool            // the handles stay open after sending: the caller still owns them
	after   func(err error) // runs once the frame is written, or dropped with the error why
}

// channel is one end of the primary–worker connection. Sends never block on
// the peer: frames are queued and written by the channel's own goroutine, so
// that event handlers on both sides can send freely without deadlocking each
// other. Reading is done by the owner of the channel through reader.
type channel struct {
	t      transport
	reader *frameReader

	mu      sync.Mutex
	cond    sync.Cond
	queue   []outFrame
	spare   []outFrame
	closing bool // no more sends; the writer flushes the queue, then closes
	err     error
	done    chan struct{} // closed when the writer has exited and the transport is closed

	// limit bounds the bytes queued and not yet written (0: no bound). A
	// peer that reads nothing would otherwise grow this process's memory
	// without end: past the limit the channel is closed, and overflow says
	// why.
	limit    int
	queued   int
	overflow error
}

// sendQueueLimit is the primary's bound on what it queues for one worker:
// 4 × Settings.MaxMessageSize, at least 16 MiB.
func sendQueueLimit(maxMessage int) int {
	const floor = 16 << 20
	if maxMessage > (math.MaxInt-floor)/4 {
		return math.MaxInt
	}
	return max(4*maxMessage, floor)
}

// closedErr returns why the channel closed itself, if it did: the peer left
// too much unread.
func (ch *channel) closedErr() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.overflow
}

func newChannel(t transport, maxFrame int) *channel {
	ch := &channel{t: t, reader: newFrameReader(t, maxFrame), done: make(chan struct{})}
	ch.cond.L = &ch.mu
	go ch.writeLoop()
	return ch
}

// send queues f. On error f's handles are closed (unless keep) and f.after is not run.
func (ch *channel) send(f outFrame) error {
	ch.mu.Lock()
	if ch.closing {
		ch.mu.Unlock()
		if !f.keep {
			closeHandles(f.handles)
		}
		return ErrChannelClosed
	}
	if ch.limit > 0 && ch.queued > 0 && ch.queued+len(f.b) > ch.limit {
		ch.overflow = fmt.Errorf("disconnected: it does not read its channel (%d bytes queued for it, the limit is %d)", ch.queued, ch.limit)
		ch.closing = true
		ch.err = ch.overflow
		ch.cond.Signal()
		ch.mu.Unlock()
		if !f.keep {
			closeHandles(f.handles)
		}
		ch.t.close() // unblocks the writer and the reader
		return fmt.Errorf("%w: %w", ErrChannelClosed, ch.overflow)
	}
	ch.queued += len(f.b)
	ch.queue = append(ch.queue, f)
	if len(ch.queue) == 1 {
		ch.cond.Signal()
	}
	ch.mu.Unlock()
	return nil
}

// sendWait queues f and waits until it is written.
func (ch *channel) sendWait(f outFrame) error {
	written := make(chan error, 1)
	after := f.after
	f.after = func(err error) {
		if after != nil {
			after(err)
		}
		written <- err
	}
	if err := ch.send(f); err != nil {
		return err
	}
	return <-written
}

// shutdown stops new sends, lets the writer flush what is queued and then
// closes the transport, so that the peer reads everything, then EOF.
func (ch *channel) shutdown() {
	ch.mu.Lock()
	ch.closing = true
	ch.cond.Signal()
	ch.mu.Unlock()
}

// abort closes the channel at once, dropping what is queued.
func (ch *channel) abort(err error) {
	ch.mu.Lock()
	ch.closing = true
	if ch.err == nil {
		ch.err = err
	}
	ch.cond.Signal()
	ch.mu.Unlock()
	ch.t.close() // unblocks the writer and the reader
}

// isClosing reports whether sends are refused.
func (ch *channel) isClosing() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.closing
}

func (ch *channel) writeLoop() {
	var err error
	for {
		ch.mu.Lock()
		for len(ch.queue) == 0 && !ch.closing {
			ch.cond.Wait()
		}
		batch := ch.queue
		ch.queue = ch.spare[:0]
		aborted := ch.err != nil
		done := ch.closing && len(batch) == 0
		ch.mu.Unlock()
		if done || aborted {
			ch.finish(batch, ErrChannelClosed)
			break
		}
		err = ch.write(batch)
		ch.finish(batch, err)
		written := 0
		for _, f := range batch {
			written += len(f.b)
		}
		clear(batch)
		ch.mu.Lock()
		ch.queued -= written
		ch.spare = batch[:0]
		ch.mu.Unlock()
		if err != nil {
			break
		}
	}
	ch.mu.Lock()
	ch.closing = true
	if ch.err == nil {
		ch.err = err
	}
	rest := ch.queue
	ch.queue = nil
	ch.mu.Unlock()
	ch.finish(rest, ErrChannelClosed)
	ch.t.close()
	close(ch.done)
}

// write sends a batch: runs of frames without handles go out in one write;
// a frame with handles starts its own, so that the handles arrive with it.
func (ch *channel) write(batch []outFrame) error {
	var run [][]byte
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		err := ch.t.writev(run)
		run = run[:0]
		return err
	}
	for _, f := range batch {
		if len(f.handles) > 0 {
			if err := flush(); err != nil {
				return err
			}
			if err := ch.t.send(f.b, f.handles); err != nil {
				return err
			}
			continue
		}
		run = append(run, f.b)
	}
	return flush()
}

// finish releases what the frames hold once they are written or dropped.
func (ch *channel) finish(batch []outFrame, err error) {
	for _, f := range batch {
		if !f.keep {
			closeHandles(f.handles)
		}
		if f.after != nil {
			f.after(err)
		}
		if f.buf != nil {
			putBuffer(f.buf)
		}
	}
}
