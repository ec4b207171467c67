package clusternet

// Runs in a worker: waiting for main to reach its first wait before the
// primary's disconnect is acted on, as Node runs a worker's top-level code
// before it handles any message from the primary.

import (
	"bytes"
	"runtime"
	"time"
)

// The worker's half starts in the package's init, before main, and the
// primary may disconnect the worker as soon as it reports online (Node's
// test-cluster-worker-forced-exit does, in its online handler). Acting on it
// at once would run the disconnect handlers, and exit, before main had
// registered them. Node cannot do that: its event loop handles the message
// once the top-level code has finished. Go's nearest point is the moment
// the main goroutine first waits inside main.main (in a Serve, a select, a
// channel receive): by then the code at the start of main has run.
const (
	// mainSettleLimit bounds the wait for a main that never waits (a busy
	// loop) or cannot be seen to.
	mainSettleLimit = 5 * time.Second
	// mainSettlePoll is how often the main goroutine is looked at: each
	// look is a runtime.Stack of every goroutine, about 20 µs for the few a
	// starting worker has (measured), and it stops the world.
	mainSettlePoll = time.Millisecond
)

// awaitMain returns once the main goroutine waits inside main.main, or after
// mainSettleLimit.
func awaitMain() {
	deadline := time.Now().Add(mainSettleLimit)
	buf := make([]byte, 64<<10)
	for !mainSettled(buf) && time.Now().Before(deadline) {
		time.Sleep(mainSettlePoll)
	}
}

// mainSettled reports whether goroutine 1, the main goroutine, is inside
// main.main and waiting: runtime.Stack writes it first as
// "goroutine 1 [state]:" and its frames, innermost first.
func mainSettled(buf []byte) bool {
	n := runtime.Stack(buf, true)
	s := buf[:n]
	const head = "goroutine 1 ["
	i := bytes.Index(s, []byte(head))
	if i < 0 {
		return false
	}
	s = s[i+len(head):]
	end := bytes.IndexByte(s, ']')
	if end < 0 {
		return false
	}
	state := s[:end]
	if bytes.HasPrefix(state, []byte("running")) || bytes.HasPrefix(state, []byte("runnable")) {
		return false
	}
	if next := bytes.Index(s, []byte("\n\ngoroutine ")); next >= 0 {
		s = s[:next]
	}
	return bytes.Contains(s, []byte("\nmain.main()"))
}
