package clusternet

// Runs in the primary: its half of a Worker: reading the worker's frames,
// the events they raise, Disconnect and Kill from the primary, and the
// wait for the process.

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"time"
)

// forget removes w from Workers(); its shared addresses stay until its
// channel closes (dropWorker).
func (w *Worker) forget() {
	cluster.mu.Lock()
	if cluster.workers[w.id] == w {
		delete(cluster.workers, w.id)
	}
	cluster.mu.Unlock()
}

func (w *Worker) disconnectFromPrimary() error {
	w.mu.Lock()
	w.exitedAfterDisconnect = true
	already := w.disconnecting
	w.disconnecting = true
	w.mu.Unlock()
	w.forget()
	if already {
		return nil
	}
	stopHandoffs(w)
	if w.node != nil {
		return w.node.disconnect()
	}
	if err := w.ch.send(outFrame{b: newFrame(frameDisconnect, 0, 0)}); err != nil && !errors.Is(err, ErrChannelClosed) {
		return err
	}
	return nil
}

func (w *Worker) killFromPrimary(sig os.Signal) error {
	if sig == nil {
		sig = terminateSignal
	}
	w.forget()
	stopHandoffs(w)
	// Recorded first: the process may be gone, and its status read, before
	// signalProcess returns.
	w.mu.Lock()
	w.killedWith = sig
	w.mu.Unlock()
	if err := signalProcess(w.proc, sig); err != nil {
		w.mu.Lock()
		w.killedWith = nil
		w.mu.Unlock()
		if errors.Is(err, os.ErrProcessDone) {
			return nil
		}
		return fmt.Errorf("clusternet: kill worker %d: %w", w.id, err)
	}
	return nil
}

// refusedGrace is how long a refused worker has to exit by itself.
const refusedGrace = time.Second

// serve reads the worker's frames until the channel closes, then emits the
// disconnect event (after an error event when the worker broke the protocol).
func (w *Worker) serve() {
	defer close(w.readerDone)
	var err error
	if w.node != nil {
		err = w.node.read()
	} else {
		err = w.readFrames()
	}
	w.ch.abort(ErrChannelClosed)
	w.ch.reader.close()
	// Only once the writer has stopped can the connections it was sending
	// go to other workers: none of their descriptors may be closed, and its
	// number reused, under a write in progress.
	<-w.ch.done
	if w.node != nil {
		w.node.shutdown()
		if n := w.node.lr.close(); n > 0 {
			w.postError(fmt.Errorf("clusternet: worker %d: closed %d handle(s) that no %s line claimed", w.id, n, nodeCmdHandle))
		}
	}
	dropWorker(w)
	w.mu.Lock()
	w.connected = false
	w.mu.Unlock()
	if oerr := w.ch.closedErr(); oerr != nil {
		err = oerr // the channel closed itself: say why, not that it closed
	}
	if err != nil && !isClosedErr(err) {
		w.postError(fmt.Errorf("clusternet: worker %d: %w", w.id, err))
	}
	events.post(func() {
		w.mu.Lock()
		if w.state != StateDead {
			w.state = StateDisconnected
		}
		w.mu.Unlock()
		for _, fn := range w.onDisconnect.list() {
			fn()
		}
		for _, fn := range cluster.onDisconnect.list() {
			fn(w)
		}
	})
}

// refuse answers a worker that speaks protocol version v with frameRefused
// and reports the refusal (error event). From then on what the worker sends
// is discarded unread, and the channel stays open so that the worker can
// read the refusal (closing it could reset it first); a worker that has not
// exited within refusedGrace is killed.
func (w *Worker) refuse(v uint32) error {
	what := fmt.Sprintf("version %d", v)
	if v == 0 {
		what = "version 0 (a clusternet release older than versioned handshakes)"
	}
	err := fmt.Errorf("%w: worker %d speaks protocol %s, this primary speaks version %d; "+
		"build the worker and the primary with the same clusternet release, or replace the primary too (Upgrade, or a restart)",
		ErrVersion, w.id, what, protocolVersion)
	w.mu.Lock()
	w.refused = err
	w.mu.Unlock()
	msg := err.Error()
	w.ch.send(outFrame{b: append(newFrame(frameRefused, len(msg), 0), msg...)})
	w.postError(err)
	time.AfterFunc(refusedGrace, func() {
		if !w.IsDead() {
			w.Kill(os.Kill)
		}
	})
	return nil
}

// refusal returns why the primary refused w, or nil.
func (w *Worker) refusal() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.refused
}

func (w *Worker) readFrames() error {
	for {
		f, err := w.ch.reader.next()
		if err != nil {
			return err
		}
		if err := w.handleFrame(f); err != nil {
			return err
		}
	}
}

func (w *Worker) handleFrame(f frame) error {
	if f.kind != frameMessage && len(f.handles) > 0 {
		closeHandles(f.handles)
		return protocolErrorf("a frame of kind %d carries %d handle(s)", f.kind, len(f.handles))
	}
	// Only the reader, this goroutine, writes online and refused (under
	// w.mu, for the others that read them): it reads them without the lock,
	// which every frame would otherwise take once more.
	online, refused := w.online, w.refused != nil
	if refused {
		closeHandles(f.handles) // unread: it may mean anything
		return nil
	}
	if !online && f.kind != frameOnline {
		closeHandles(f.handles)
		return protocolErrorf("a frame of kind %d before the online report", f.kind)
	}
	switch f.kind {
	case frameMessage:
		return w.deliverMessage(f)
	case frameOnline:
		if online {
			// Each report would be an event: a worker repeating it
			// without end would grow the event queue.
			return protocolErrorf("worker reported online twice")
		}
		v, err := onlineVersion(f.body)
		if err != nil {
			return err
		}
		if v != protocolVersion {
			return w.refuse(v)
		}
		w.postOnline()
	case frameExitedAfterDisconnect:
		w.mu.Lock()
		w.exitedAfterDisconnect = true
		w.mu.Unlock()
	case frameSignalled:
		if len(f.body) != 4 {
			return protocolErrorf("a signal report of %d bytes, want 4", len(f.body))
		}
		w.mu.Lock()
		w.signalled = true
		die := byte(0)
		if w.killedWith != nil {
			die = 1 // Kill sent it: the worker dies of it rather than draining
		}
		w.mu.Unlock()
		w.ch.send(outFrame{b: append(newFrame(frameVerdict, 1, 0), die)})
	case frameListen, frameListening, frameDemand, frameUnlisten:
		return handleListenFrame(w, f)
	default:
		return protocolErrorf("a worker may not send frames of kind %d", f.kind)
	}
	return nil
}

// postOnline marks w online and emits its online event. Only w's reader
// calls it.
func (w *Worker) postOnline() {
	w.mu.Lock()
	w.online = true
	w.noteLocked()
	w.mu.Unlock()
	events.post(func() {
		w.mu.Lock()
		if w.state == StateNone {
			w.state = StateOnline
		}
		w.mu.Unlock()
		for _, fn := range w.onOnline.list() {
			fn()
		}
		for _, fn := range cluster.onOnline.list() {
			fn(w)
		}
	})
}

// maxListeningReports bounds the addresses the primary remembers a worker
// listening on: a worker that reports more is disconnected.
const maxListeningReports = 4096

// noteListening records where the worker listens, for Reload, at once:
// not when the event's turn comes.
func (w *Worker) noteListening(a Address) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.listenedAt == nil {
		w.listenedAt = make(map[string]bool)
	}
	key := joinNetwork(a.Network, a.String())
	if !w.listenedAt[key] && len(w.listenedAt) >= maxListeningReports {
		return protocolErrorf("worker reported listening on more than %d addresses", maxListeningReports)
	}
	w.listenedAt[key] = true
	w.noteLocked()
	return nil
}

// noteLocked wakes those waiting for w's next report. Called with w.mu held.
func (w *Worker) noteLocked() {
	close(w.listenNote)
	w.listenNote = make(chan struct{})
}

// listensOn reports whether w is online and listens on every address in
// want, and returns a channel closed at w's next report.
func (w *Worker) listensOn(want map[string]bool) (bool, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.online {
		return false, w.listenNote
	}
	for a := range want {
		if !w.listenedAt[a] {
			return false, w.listenNote
		}
	}
	return true, w.listenNote
}

// listenedAddresses returns where w reported listening.
func (w *Worker) listenedAddresses() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.listenedAt)
}

// postListening emits the listening event.
func (w *Worker) postListening(a Address) {
	// The event waits for the handlers in the worker's inbox, as a message
	// does: a worker that reports without end only slows its own reader.
	w.inbox.reserve(0)
	events.post(func() {
		defer w.inbox.release(0)
		w.mu.Lock()
		if w.state == StateOnline || w.state == StateNone {
			w.state = StateListening
		}
		w.mu.Unlock()
		for _, fn := range w.onListening.list() {
			fn(a)
		}
		for _, fn := range cluster.onListening.list() {
			fn(w, a)
		}
	})
}

// wait waits for the process to exit and, once the channel reader has seen
// everything the worker wrote, emits the exit event.
func (w *Worker) wait() {
	ps, err := w.proc.Wait()
	w.mu.Lock()
	killedWith := w.killedWith
	w.mu.Unlock()
	status := exitStatus(ps, err, killedWith)
	<-w.readerDone
	w.mu.Lock()
	w.dead = true
	w.status = status
	w.mu.Unlock()
	events.post(func() {
		w.mu.Lock()
		w.state = StateDead
		w.mu.Unlock()
		w.forget()
		cluster.mu.Lock()
		delete(cluster.alive, w)
		cluster.mu.Unlock()
		if sup := runningSupervisor(); sup != nil {
			sup.exited(w, status)
		}
		for _, fn := range w.onExit.list() {
			fn(status)
		}
		for _, fn := range cluster.onExit.list() {
			fn(w, status)
		}
		close(w.done)
	})
}
