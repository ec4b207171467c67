package clusternet

// Shared: the Worker type, its public methods, and message delivery, which
// both sides use.

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// State is a worker's place in its life, as Node's worker.state.
type State int

// The states a worker goes through, in order. StateDisconnected and StateDead may come
// in either order; StateDead is final.
const (
	StateNone State = iota
	StateOnline
	StateListening
	StateDisconnected
	StateDead
)

// String returns Node's name for the state: "none", "online", "listening",
// "disconnected" or "dead".
func (s State) String() string {
	switch s {
	case StateNone:
		return "none"
	case StateOnline:
		return "online"
	case StateListening:
		return "listening"
	case StateDisconnected:
		return "disconnected"
	case StateDead:
		return "dead"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// ExitStatus is how a worker process ended.
type ExitStatus struct {
	Code   int       // the exit code; -1 when the process was killed by a signal
	Signal os.Signal // the signal that killed the process, or nil
}

// String describes the status as "exit code 3" or "signal: terminated",
// as os.ProcessState does.
func (s ExitStatus) String() string {
	if s.Signal != nil {
		return "signal: " + s.Signal.String()
	}
	return fmt.Sprintf("exit code %d", s.Code)
}

// Worker is a worker process. In the primary, Fork returns one per process;
// in a worker, Self returns the worker itself, whose Send and OnMessage talk
// to the primary.
type Worker struct {
	// Both sides: the peer, the channel to it, events and messages.
	id    int
	proc  *os.Process
	ch    *channel // nil in a worker without a channel (chErr says why)
	chErr error
	codec Serialization
	max   int  // largest message body
	self  bool // this is Self(), not a worker seen by the primary

	// A Node.js worker (Settings.NodeIPC): its channel speaks Node's
	// protocols (primary_node.go). Set at Fork.
	node *nodeWorker

	mu                    sync.Mutex
	state                 State
	connected             bool
	dead                  bool
	exitedAfterDisconnect bool
	disconnecting         bool

	onOnline     handlers[func()]
	onListening  handlers[func(Address)]
	onMessage    handlers[func(Message)]
	onDisconnect handlers[func()]
	onExit       handlers[func(ExitStatus)]
	onError      handlers[func(error)]

	inbox      inbox
	invalid    invalidMessages // messages that did not decode, waiting for their error event
	gobIn      gobDecoders     // with Gob: decoders for the messages that arrive
	done       chan struct{}   // closed after the exit handlers ran
	readerDone chan struct{}   // closed when the channel reader has finished
	stats      workerCounters

	// The primary's view of a worker it forked (primary*.go). Guarded by
	// mu, except the buffers and env, set at Fork.
	online     bool                     // the worker reported in (set on receipt, not at the event; written by its reader only)
	status     ExitStatus               // how the process ended, once dead
	killedWith os.Signal                // the signal Kill sent
	stdout     *outputBuffer            // with Silent
	stderr     *outputBuffer            // with Silent
	subs       map[uint32]*subscription // the shared addresses this worker uses, by key
	env        []string                 // the env given to Fork, for respawns and reloads
	listenedAt map[string]bool          // network|address the worker reported listening on
	listenNote chan struct{}            // closed and replaced at each report
	refused    error                    // why the primary refused the worker (ErrVersion; written by its reader only)
	signalled  bool                     // the worker drains on a signal (frameSignalled)
	started    time.Time                // when it was forked (in a worker: when the package started)
	replaces   *Worker                  // a reload's replacement: the worker it replaces (set at Fork)

	// The worker's own (Self(); child*.go).
	listeners   listenerSet   // its clusternet listeners
	killOnce    sync.Once     // Kill leaves once
	early       earlyMessages // messages that came before the first OnMessage
	drainedOn   atomic.Int32  // the signal it drains on (drainOnSignals), or 0
	leavingSelf atomic.Bool   // the primary's disconnect came, or the drain began: a failed listen waits (child_listen.go)
	verdict     chan struct{} // closed when the primary has answered frameSignalled
	verdictOnce sync.Once
}

// ID returns the worker's id: 1, 2, 3... in fork order, as Node's worker.id.
func (w *Worker) ID() int { return w.id }

// Process returns the worker's process (in a worker, the current process).
func (w *Worker) Process() *os.Process { return w.proc }

// State returns the state the events delivered so far have put the worker in.
func (w *Worker) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// IsConnected reports whether the channel to the worker (in a worker: to the
// primary) is open.
func (w *Worker) IsConnected() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.connected
}

// IsDead reports whether the worker process has exited. In a worker it is
// always false.
func (w *Worker) IsDead() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dead
}

// ExitedAfterDisconnect reports whether the worker is leaving, or left, on
// purpose: Disconnect was called on either side, or Kill in the worker itself.
// A worker that crashed or was killed from outside reports false.
func (w *Worker) ExitedAfterDisconnect() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.exitedAfterDisconnect
}

func (w *Worker) exitStatus() ExitStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Done returns a channel that is closed once the worker's exit event has run.
// In a worker it is never closed: the process ends first.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Stdout returns the worker's standard output when Settings.Silent is set
// (and Settings.Stdout is not), or nil. Output is buffered in the primary
// until it is read, so a worker never blocks on an unread pipe; the reader
// returns io.EOF once the worker has exited and its output is drained. The
// buffer keeps the newest 1 MiB not yet read: a reader that falls further
// behind misses the oldest output, counted in Stats().OutputDropped.
func (w *Worker) Stdout() io.Reader {
	if w.stdout == nil {
		return nil
	}
	return w.stdout
}

// Stderr is Stdout for standard error.
func (w *Worker) Stderr() io.Reader {
	if w.stderr == nil {
		return nil
	}
	return w.stderr
}

// OnOnline adds a handler for the worker's online event: the worker process
// has started and reported in.
func (w *Worker) OnOnline(fn func()) { w.onOnline.add(fn) }

// OnListening adds a handler for the worker's listening event: a Listen or
// ListenPacket in the worker succeeded, at the address given.
func (w *Worker) OnListening(fn func(Address)) { w.onListening.add(fn) }

// OnMessage adds a handler for messages from the worker (in a worker, from
// the primary). In a worker, messages that arrive before the first handler
// is added are kept for it, so that what the primary sends right after Fork
// is not lost while the worker starts.
func (w *Worker) OnMessage(fn func(Message)) {
	w.onMessage.add(fn)
	if w.self && !w.early.heard.Load() {
		w.hearMessages()
	}
}

// OnDisconnect adds a handler for the worker's disconnect event: the channel
// is closed.
func (w *Worker) OnDisconnect(fn func()) { w.onDisconnect.add(fn) }

// OnExit adds a handler for the worker's exit event: the process ended.
func (w *Worker) OnExit(fn func(ExitStatus)) { w.onExit.add(fn) }

// OnError adds a handler for errors on the worker's channel: a malformed or
// oversized frame, a message that cannot be decoded, a handle that was not
// announced. When the channel cannot be trusted any more it is closed and the
// disconnect event follows.
func (w *Worker) OnError(fn func(error)) { w.onError.add(fn) }

// Send sends msg, encoded with the cluster's serialization, to the worker (in
// a worker: to the primary). It does not wait for the peer: messages are
// queued and written in order. With WithHandle, a connection, listener,
// packet connection or file goes with it.
//
// Send returns ErrChannelClosed once the channel is closed, ErrInvalidHandle
// for a handle that cannot be sent, and an error for a message that cannot be
// encoded or is larger than Settings.MaxMessageSize; on error nothing is sent
// and the handle stays open.
func (w *Worker) Send(msg any, opts ...SendOption) error {
	if w.ch == nil {
		return w.chErr
	}
	if w.ch.isClosing() {
		return ErrChannelClosed
	}
	if w.node != nil {
		return w.node.sendMessage(msg, opts)
	}
	f, err := encodeMessage(w.codec, msg, opts)
	if err != nil {
		return err
	}
	if n := len(f.b) - frameHeaderLen; n > w.max {
		closeHandles(f.handles)
		return fmt.Errorf("clusternet: message of %d bytes is larger than the limit of %d bytes (Settings.MaxMessageSize)", n, w.max)
	}
	if err := w.ch.send(f); err != nil {
		return err
	}
	w.stats.messagesOut.Add(1)
	return nil
}

// Disconnect disconnects the worker gracefully, as Node's worker.disconnect:
// the worker closes its clusternet listeners, waits for the connections they
// handed out to close, closes the channel and exits with code 0, and
// ExitedAfterDisconnect becomes true. It returns at once; the disconnect and
// exit events say when it is over. Long-lived connections can hold a worker
// up indefinitely: send it a message that makes it close them, or Kill it
// after a timeout.
//
// In a worker, Disconnect starts the same on the worker itself; the process
// exits when it is done.
func (w *Worker) Disconnect() error {
	if w.self {
		return w.disconnectSelf(false)
	}
	return w.disconnectFromPrimary()
}

// CloseChannel closes the channel between the primary and the worker
// without the disconnect protocol, as Node's worker.process.disconnect()
// does (process.disconnect() in the worker itself): what was sent before is
// delivered, then the channel closes. The worker is not drained: it exits
// with code 0 at once, as a worker whose primary went away does, after its
// disconnect handlers, and ExitedAfterDisconnect stays false. It returns
// ErrChannelClosed if the channel is already closed, and in a worker without
// a channel the reason it has none.
func (w *Worker) CloseChannel() error {
	if w.ch == nil {
		return w.chErr
	}
	if w.ch.isClosing() {
		return ErrChannelClosed
	}
	w.ch.shutdown()
	return nil
}

// Kill ends the worker. In the primary it sends sig to the worker process
// (nil means SIGTERM; Windows can only terminate the process outright), the
// worker leaves Workers() at once and the exit event reports the signal.
// Killing a worker that has already exited does nothing.
//
// In a worker, as Node's worker.kill, the worker tells the primary that it
// leaves on purpose (ExitedAfterDisconnect is true) and closes the channel;
// then, with sig nil, it exits with code 0, or it sends itself sig.
func (w *Worker) Kill(sig os.Signal) error {
	if w.self {
		return w.killSelf(sig)
	}
	return w.killFromPrimary(sig)
}

// postMessage queues a message event for w's handlers (and, in the primary,
// the cluster's). The message keeps body if owned, a copy otherwise.
func (w *Worker) postMessage(body []byte, owned bool, gd *gobDecoder, h *receivedHandle) {
	if !owned {
		body = append([]byte(nil), body...)
	}
	m := Message{data: body, codec: w.codec, gob: gd, h: h}
	if w.self && !w.early.heard.Load() {
		w.early.mu.Lock()
		defer w.early.mu.Unlock()
		if !w.early.heard.Load() {
			w.early.hold(m)
			return
		}
	}
	w.queueMessage(m)
}

// earlyMessages holds, in a worker, the messages that arrive before its
// first Self().OnMessage handler: the primary may send as soon as Fork
// returns, before the worker's main has run and added its handlers (a Node
// worker hears such messages: its handlers are added before its event loop
// reads the channel). Beyond the inbox limits the oldest are dropped, so
// that a worker that never listens for messages neither grows nor stalls.
type earlyMessages struct {
	mu    sync.Mutex
	heard atomic.Bool // OnMessage was called: messages go to the handlers
	held  []Message
	bytes int
}

// hold keeps m for the first handler. Called with mu held.
func (e *earlyMessages) hold(m Message) {
	e.held = append(e.held, m)
	e.bytes += len(m.data)
	for len(e.held) > 1 && (len(e.held) > inboxMaxMessages || e.bytes > inboxMaxBytes) {
		if e.held[0].h != nil {
			e.held[0].h.release()
		}
		e.bytes -= len(e.held[0].data)
		e.held[0] = Message{}
		e.held = e.held[1:]
	}
}

// hearMessages delivers the held messages, in order, once a worker has
// its first message handler; later messages follow them.
func (w *Worker) hearMessages() {
	w.early.mu.Lock()
	defer w.early.mu.Unlock()
	if w.early.heard.Load() {
		return
	}
	for _, m := range w.early.held {
		w.queueMessage(m)
	}
	w.early.held, w.early.bytes = nil, 0
	// Only now: the reader checks heard without the lock, and must not
	// queue a new message ahead of the held ones.
	w.early.heard.Store(true)
}

func (w *Worker) queueMessage(m Message) {
	n, h := len(m.data), m.h
	w.inbox.reserve(n)
	events.post(func() {
		defer w.inbox.release(n)
		for _, fn := range w.onMessage.list() {
			fn(m)
		}
		if !w.self {
			for _, fn := range cluster.onMessage.list() {
				fn(w, m)
			}
		}
		if h != nil {
			h.release()
		}
	})
}

// parseMessage checks a message frame and returns its body and handle.
func (w *Worker) parseMessage(f frame) ([]byte, *receivedHandle, error) {
	if len(f.body) < 1 {
		closeHandles(f.handles)
		return nil, nil, protocolErrorf("empty message frame")
	}
	kind := handleKind(f.body[0])
	switch {
	case kind >= handleKindEnd:
		closeHandles(f.handles)
		return nil, nil, protocolErrorf("message announces a handle of unknown kind %d", kind)
	case (kind == handleNone) != (len(f.handles) == 0) || len(f.handles) > 1:
		closeHandles(f.handles)
		return nil, nil, protocolErrorf("message announces %v but %d handle(s) came with it", kind, len(f.handles))
	}
	var h *receivedHandle
	if kind != handleNone {
		h = &receivedHandle{kind: kind, h: f.handles[0]}
	}
	return f.body[1:], h, nil
}

// deliverMessage drops a message that does not decode, with an error event
// (the framing is intact, so the channel stays up), and queues the rest.
func (w *Worker) deliverMessage(f frame) error {
	body, h, err := w.parseMessage(f)
	if err != nil {
		return err
	}
	gd, err := w.checkMessage(body)
	if err != nil {
		if h != nil {
			h.release()
		}
		w.dropInvalid(err)
		return nil
	}
	w.stats.messagesIn.Add(1)
	w.postMessage(body, f.owned, gd, h)
	if w.ch.reader.buffered() == 0 {
		// The handlers first: with nothing buffered, the next read only
		// finds the channel empty, a system call that a reply would
		// otherwise wait for when the handlers share the reader's P.
		runtime.Gosched()
	}
	return nil
}

// checkMessage checks the body of a message as it arrives and returns the
// decoder that will decode it, if it is not to be decoded on its own.
func (w *Worker) checkMessage(body []byte) (*gobDecoder, error) {
	if w.codec == Gob {
		return w.gobIn.check(body)
	}
	return nil, w.codec.check(body)
}

// invalidMessages coalesces the error events for a peer's messages that do
// not decode: while one such event waits for the handlers, later messages
// are only counted, and the event reports them all. Each message still
// holds a place in the inbox until its event has run, so a peer sending
// nothing valid is slowed down through its socket as one sending valid
// messages is, and the event queue holds at most one such event per peer,
// however many messages it stands for.
type invalidMessages struct {
	mu      sync.Mutex
	pending bool  // an event is posted and has not taken the count yet
	count   int   // messages dropped since that event was posted
	first   error // why the first of them does not decode
}

// dropInvalid counts a message that does not decode, err saying why, and
// reports it in an error event: a new one, or the one already waiting.
func (w *Worker) dropInvalid(err error) {
	w.stats.messagesDropped.Add(1)
	w.inbox.reserve(0)
	iv := &w.invalid
	iv.mu.Lock()
	iv.count++
	if iv.pending {
		iv.mu.Unlock()
		return
	}
	iv.pending, iv.first = true, err
	iv.mu.Unlock()
	events.post(func() {
		iv.mu.Lock()
		n, first := iv.count, iv.first
		iv.pending, iv.count, iv.first = false, 0, nil
		iv.mu.Unlock()
		defer func() {
			for range n {
				w.inbox.release(0)
			}
		}()
		err := fmt.Errorf("clusternet: worker %d: dropped a message that is not valid %v: %w", w.id, w.codec, first)
		if n > 1 {
			err = fmt.Errorf("clusternet: worker %d: dropped %d messages that are not valid %v; the first: %w", w.id, n, w.codec, first)
		}
		for _, fn := range w.onError.list() {
			fn(err)
		}
	})
}

func (w *Worker) postError(err error) {
	events.post(func() {
		for _, fn := range w.onError.list() {
			fn(err)
		}
	})
}
