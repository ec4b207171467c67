package clusternet

import (
	"io"
	"sync"
)

// outputBuffer holds a silent worker's output until it is read: writes never
// block, so an unread pipe never stalls the worker.
type outputBuffer struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	closed bool
}

func newOutputBuffer() *outputBuffer {
	b := &outputBuffer{}
	b.cond.L = &b.mu
	return b
}

func (b *outputBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.buf = append(b.buf, p...)
	b.cond.Broadcast()
	b.mu.Unlock()
	return len(p), nil
}

// Read reads buffered output, waiting for more until the worker's end of the
// pipe is closed; then it returns io.EOF.
func (b *outputBuffer) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 && !b.closed {
		b.cond.Wait()
	}
	if len(b.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil
	}
	return n, nil
}

func (b *outputBuffer) closeWrite() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}
