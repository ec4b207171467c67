package clusternet

// Runs in the primary: the buffer behind a Silent worker's Stdout and
// Stderr.

import (
	"io"
	"sync"
)

// maxBufferedOutput bounds what the primary holds of one stream of a silent
// worker that nobody reads. 1 MiB keeps the end of a crash: a Go panic's
// goroutine dump (a few KiB per goroutine) for hundreds of goroutines, or the
// last ten thousand log lines; yet a hundred silent workers hold at most
// 200 MiB. Past it the oldest output goes, since the newest (a panic trace)
// is what a reader wants.
const maxBufferedOutput = 1 << 20

// outputBuffer holds a silent worker's output until it is read: writes never
// block, so an unread pipe never stalls the worker. It keeps the newest
// maxBufferedOutput bytes, in a ring that grows up to that size; older
// output is dropped and counted.
type outputBuffer struct {
	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte // the ring; len(buf) is its size
	r, n    int    // buf[r:r+n], wrapping around, is unread
	dropped uint64 // bytes written and never read
	closed  bool
}

func newOutputBuffer() *outputBuffer {
	b := &outputBuffer{}
	b.cond.L = &b.mu
	return b
}

func (b *outputBuffer) Write(p []byte) (int, error) {
	written := len(p)
	if written == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) > maxBufferedOutput {
		b.dropped += uint64(len(p) - maxBufferedOutput)
		p = p[len(p)-maxBufferedOutput:]
	}
	if b.n+len(p) > len(b.buf) && len(b.buf) < maxBufferedOutput {
		b.grow(b.n + len(p))
	}
	if over := b.n + len(p) - len(b.buf); over > 0 {
		b.dropped += uint64(over)
		b.r = (b.r + over) % len(b.buf)
		b.n -= over
	}
	w := (b.r + b.n) % len(b.buf)
	k := copy(b.buf[w:], p)
	copy(b.buf, p[k:])
	b.n += len(p)
	b.cond.Broadcast()
	return written, nil
}

// grow makes the ring at least need bytes (at most maxBufferedOutput),
// doubling, with the unread bytes at its start.
func (b *outputBuffer) grow(need int) {
	size := min(max(need, 2*len(b.buf), 4<<10), maxBufferedOutput)
	buf := make([]byte, size)
	k := copy(buf, b.buf[b.r:min(b.r+b.n, len(b.buf))])
	copy(buf[k:], b.buf[:b.n-k])
	b.buf, b.r = buf, 0
}

// Read reads buffered output, waiting for more until the worker's end of the
// pipe is closed; then it returns io.EOF.
func (b *outputBuffer) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.n == 0 && !b.closed {
		b.cond.Wait()
	}
	if b.n == 0 {
		return 0, io.EOF
	}
	k := copy(p, b.buf[b.r:min(b.r+b.n, len(b.buf))])
	k += copy(p[k:], b.buf[:b.n-k])
	b.r = (b.r + k) % len(b.buf)
	b.n -= k
	return k, nil
}

func (b *outputBuffer) closeWrite() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

// droppedBytes returns how many bytes were dropped unread; b may be nil.
func (b *outputBuffer) droppedBytes() uint64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}
