package clusternet

// Shared: a pool of encoding buffers.

import (
	"bytes"
	"sync"
)

var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

// putBuffer returns b to the pool unless it grew large, so that one big
// message does not pin its memory.
func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	bufferPool.Put(b)
}
