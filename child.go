package clusternet

// Runs in a worker: finding the channel at start, the online report, the
// reader of the primary's frames, and leaving (Disconnect and Kill in the
// worker itself; methods end in Self).

import (
	"fmt"
	"os"
	"strconv"
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
	for _, k := range []string{envWorkerID, envChannel, envSerialization, envMaxMessage} {
		os.Unsetenv(k)
	}
	w := &Worker{self: true, connected: true, done: make(chan struct{}), readerDone: make(chan struct{})}
	w.proc, _ = os.FindProcess(os.Getpid())
	self = w
	if err := w.attach(idText, chText, codecText, maxText); err != nil {
		w.connected = false
		w.chErr = fmt.Errorf("%w (%v): was this process started by clusternet.Fork? If not, unset %s", ErrNoChannel, err, envWorkerID)
		close(w.readerDone)
		return
	}
	w.state = StateOnline
	go w.serveSelf()
	w.ch.send(outFrame{b: newFrame(frameOnline, 0, 0)})
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
			go w.disconnectSelf(true)
		case frameListenReply, frameReclaimed, frameRebound:
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
	if w.ch == nil {
		return w.chErr
	}
	w.mu.Lock()
	already := w.disconnecting
	w.disconnecting = true
	w.exitedAfterDisconnect = true
	w.mu.Unlock()
	if already {
		return nil
	}
	go func() {
		if !primaryInitiated {
			w.ch.send(outFrame{b: newFrame(frameExitedAfterDisconnect, 0, 0)})
		}
		w.listeners.closeAll()
		w.listeners.waitConns()
		w.leave()
		w.exitAfterDisconnectEvent(0)
	}()
	return nil
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
