package clusternet

// Runs in a worker: finding the channel at start, the online report, the
// reader of the primary's frames, and leaving (Disconnect and Kill in the
// worker itself; methods end in Self).

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// self is this process's Worker when it is a worker.
var self *Worker

// IsWorker reports whether this process is a worker (Node's
// cluster.isWorker): it was started with CLUSTERNET_WORKER_ID set.
func IsWorker() bool { return self != nil }

// Self returns this worker (Node's cluster.worker), or nil in the primary.
// Its Send and OnMessage talk to the primary.
func Self() *Worker { return self }

// The worker side starts when the package is initialized, before main, so
// that the primary hears "online" from every worker, and so that the
// variables are gone before any code of the worker's can start a process
// that would inherit them.
func init() {
	idText, ok := os.LookupEnv(envWorkerID)
	if !ok {
		return
	}
	chText := os.Getenv(envChannel)
	codecText := os.Getenv(envSerialization)
	maxText := os.Getenv(envMaxMessage)
	die, _ := strconv.ParseBool(os.Getenv(envDieOnSignal))
	for _, k := range []string{envWorkerID, envChannel, envSerialization, envMaxMessage, envDieOnSignal} {
		os.Unsetenv(k)
	}
	w := &Worker{self: true, connected: true, done: make(chan struct{}), readerDone: make(chan struct{}), started: time.Now()}
	w.proc, _ = os.FindProcess(os.Getpid())
	self = w
	if err := w.attach(idText, chText, codecText, maxText); err != nil {
		w.connected = false
		w.chErr = fmt.Errorf("%w (%v): was this process started by clusternet.Fork? If not, unset %s", ErrNoChannel, err, envWorkerID)
		close(w.readerDone)
		return
	}
	w.state = StateOnline
	w.ch.send(outFrame{b: onlineFrame()}) // first: see protocol.go, Versions
	if !die {
		w.drainOnSignals()
	}
	go w.serveSelf()
}

func (w *Worker) attach(idText, chText, codecText, maxText string) error {
	id, err := strconv.Atoi(idText)
	if err != nil || id <= 0 {
		return fmt.Errorf("%s=%q is not a worker id", envWorkerID, idText)
	}
	w.id = id
	if w.codec, err = parseSerialization(codecText); err != nil {
		return err
	}
	w.max = DefaultMaxMessageSize
	if maxText != "" {
		if w.max, err = strconv.Atoi(maxText); err != nil || w.max <= 0 {
			return fmt.Errorf("%s=%q is not a size", envMaxMessage, maxText)
		}
	}
	if chText == "" {
		return fmt.Errorf("%s is not set", envChannel)
	}
	h, err := strconv.ParseUint(chText, 10, 64)
	if err != nil {
		return fmt.Errorf("%s=%q is not a descriptor", envChannel, chText)
	}
	t, err := inheritedChannel(h)
	if err != nil {
		return err
	}
	w.ch = newChannel(t, w.max+1)
	return nil
}

// serveSelf reads the primary's frames. When the channel closes without this
// worker having asked for it (the primary exited, or disconnected it), the
// worker exits with code 0, as a Node worker does.
func (w *Worker) serveSelf() {
	err := w.readFramesSelf()
	w.ch.abort(ErrChannelClosed)
	w.ch.reader.close()
	w.mu.Lock()
	w.connected = false
	leaving := w.disconnecting
	w.mu.Unlock()
	close(w.readerDone)
	w.listeners.channelClosed()
	if leaving {
		return // disconnectSelf finishes the job
	}
	if err != nil && !isClosedErr(err) {
		w.postError(fmt.Errorf("clusternet: channel to the primary: %w", err))
	}
	awaitMain() // child_main.go: the handlers main registers first see it
	w.exitAfterDisconnectEvent(orphanExitDelay)
}

// orphanExitDelay bounds how long a worker whose primary is gone waits for
// its disconnect handlers before it exits.
const orphanExitDelay = 500 * time.Millisecond

// exitAfterDisconnectEvent runs the disconnect handlers and exits with code 0,
// after at most limit (0: no limit) if handlers are slow.
func (w *Worker) exitAfterDisconnectEvent(limit time.Duration) {
	ran := make(chan struct{})
	events.post(func() {
		w.mu.Lock()
		w.state = StateDisconnected
		w.mu.Unlock()
		for _, fn := range w.onDisconnect.list() {
			fn()
		}
		close(ran)
	})
	if limit > 0 {
		select {
		case <-ran:
		case <-time.After(limit):
		}
	} else {
		<-ran
	}
	os.Exit(0)
}

func (w *Worker) readFramesSelf() error {
	for {
		f, err := w.ch.reader.next()
		if err != nil {
			return err
		}
		switch f.kind {
		case frameMessage:
			err = w.deliverMessage(f)
		case frameDisconnect:
			w.leavingSelf.Store(true) // at once: a listen answered meanwhile must know
			go func() {
				awaitMain() // child_main.go: as Node, after the top-level code
				w.disconnectSelf(true)
			}()
		case frameVerdict:
			if len(f.body) != 1 {
				return protocolErrorf("a verdict of %d bytes, want 1", len(f.body))
			}
			if f.body[0] == 1 {
				// The gate stays shut: the drain must not exit with code 0
				// before the signal ends the process.
				w.dieOfSignal()
			} else if w.verdict != nil { // nil: this worker does not drain on signals
				w.verdictOnce.Do(func() { close(w.verdict) })
			}
		case frameRefused:
			// The primary speaks another protocol version: nothing it
			// could send next can be read, and nothing can be served.
			closeHandles(f.handles)
			fmt.Fprintf(os.Stderr, "clusternet: the primary refused this worker: %s\n", f.body)
			os.Exit(1)
		case frameListenReply, frameReclaimed, frameRebound, frameAdopt:
			err = w.listeners.handleFrame(w, f)
		default:
			closeHandles(f.handles)
			err = protocolErrorf("the primary may not send frames of kind %d", f.kind)
		}
		if err != nil {
			return err
		}
	}
}

// disconnectSelf closes the worker's listeners, waits for the connections
// they handed out to close, closes the channel and exits.
func (w *Worker) disconnectSelf(primaryInitiated bool) error {
	return w.drainSelf(!primaryInitiated, nil)
}

// drainSelf is disconnectSelf. With tell, the primary hears that the worker
// leaves on purpose; a gate, if not nil, holds the exit until it is closed
// or the channel is.
func (w *Worker) drainSelf(tell bool, gate <-chan struct{}) error {
	if w.ch == nil {
		return w.chErr
	}
	w.leavingSelf.Store(true)
	w.mu.Lock()
	already := w.disconnecting
	w.disconnecting = true
	w.exitedAfterDisconnect = true
	w.mu.Unlock()
	if already {
		return nil
	}
	startDraining() // Draining: before the listeners close
	go func() {
		if tell {
			w.ch.send(outFrame{b: newFrame(frameExitedAfterDisconnect, 0, 0)})
		}
		w.listeners.closeAll()
		w.listeners.waitConns()
		if gate != nil {
			select {
			case <-gate:
			case <-w.readerDone:
			}
		}
		w.leave()
		w.exitAfterDisconnectEvent(0)
	}()
	return nil
}

// drainSignals are the signals on which a worker drains (see
// Settings.DieOnSignal): those a terminal's Ctrl-C and a service manager
// send to every process of the group, the primary included, which then
// disconnects its workers itself.
var drainSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

// drainOnSignals makes the first of drainSignals drain the worker as the
// primary's disconnect does, and tells the primary (frameSignalled), whose
// verdict says whether the signal was its own Kill; a second signal kills
// the worker with the signal's default action. The goroutine lives as long
// as the process.
func (w *Worker) drainOnSignals() {
	w.verdict = make(chan struct{})
	c := make(chan os.Signal, 2)
	signal.Notify(c, drainSignals...)
	go func() {
		sig := (<-c).(syscall.Signal)
		w.drainedOn.Store(int32(sig))
		w.ch.send(outFrame{b: binary.BigEndian.AppendUint32(newFrame(frameSignalled, 4, 0), uint32(sig))})
		// Not frameExitedAfterDisconnect: the worker does not leave on
		// purpose, and the primary decides whether it is replaced.
		w.drainSelf(false, w.verdict)
		<-c
		w.dieOfSignal()
	}()
}

// dieOfSignal takes the default action of the signal the worker drains on:
// the process ends as if it had not caught it.
func (w *Worker) dieOfSignal() {
	sig := syscall.Signal(w.drainedOn.Load())
	if sig == 0 {
		return // not draining: a primary that says so is wrong, and ignored
	}
	signal.Reset(drainSignals...)
	signalProcess(w.proc, sig)
}

// leave flushes and closes the channel and waits until it is closed.
func (w *Worker) leave() {
	w.ch.shutdown()
	<-w.ch.done
	<-w.readerDone
}

func (w *Worker) killSelf(sig os.Signal) error {
	if w.ch == nil {
		return w.chErr
	}
	w.killOnce.Do(func() {
		w.mu.Lock()
		w.disconnecting = true
		w.exitedAfterDisconnect = true
		w.mu.Unlock()
		w.ch.send(outFrame{b: newFrame(frameExitedAfterDisconnect, 0, 0)})
		w.leave()
	})
	if sig == nil {
		os.Exit(0)
	}
	return signalProcess(w.proc, sig)
}
