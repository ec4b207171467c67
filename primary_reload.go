package clusternet

// Runs in the primary: Reload, the rolling restart.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// defaultReplaceTimeout is how long a reload waits for a replacement to
// listen where the worker it replaces listened, when Run has no
// WithListenTimeout.
const defaultReplaceTimeout = 30 * time.Second

func waitReload(done chan error) {
	if done != nil {
		<-done
	}
}

// Reload restarts every worker, one at a time, without refusing a
// connection: it forks a replacement (with the Fork env of the old one),
// waits until the replacement listens wherever the old worker listened, then
// disconnects the old one and waits for it to finish its connections.
//
// A replacement that exits, or does not listen within the listen timeout
// (WithListenTimeout under Run; 30 s otherwise), aborts the reload: it is
// killed, the workers not yet replaced keep serving, nothing of it is forked
// again, and Reload returns an error that says which worker failed and how.
// A later Reload starts over. While Run is running, an old worker still
// running after the shutdown timeout is killed, and a worker that dies during
// the reload is replaced by Run as usual; ctx bounds the whole reload. One
// reload runs at a time: a second call waits for the first.
//
// It returns ErrNotPrimary in a worker.
func Reload(ctx context.Context) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	if s := runningSupervisor(); s != nil {
		return s.reload(ctx)
	}
	reloadMu.Lock()
	defer reloadMu.Unlock()
	log := slog.New(slog.DiscardHandler)
	for _, old := range Workers() {
		want := old.listenedAddresses()
		nw, err := forkWorker(old.env, old)
		if err != nil {
			return fmt.Errorf("clusternet: reload: forking the replacement of worker %d: %w", old.ID(), err)
		}
		if err := awaitListening(ctx, nw, old, want, defaultReplaceTimeout); err != nil {
			return err
		}
		if err := retire(ctx, old, 0, log); err != nil {
			return err
		}
	}
	return nil
}

var reloadMu sync.Mutex // one reload at a time

// reload is Reload under Run: it replaces the worker of each slot in turn.
func (s *supervisor) reload(ctx context.Context) error {
	reloadMu.Lock()
	defer reloadMu.Unlock()
	s.notify.send("RELOADING=1", monotonicUsec(), "STATUS=reloading: replacing the workers one at a time")
	s.mu.Lock()
	slots := slices.Clone(s.slots)
	s.mu.Unlock()
	var err error
	for _, sl := range slots {
		if err = s.replaceSlot(ctx, sl, nil); err != nil {
			break
		}
	}
	status := "STATUS=serving: reloaded"
	if err != nil {
		status = "STATUS=serving; the last reload failed: " + err.Error()
	}
	s.notify.send("READY=1", status)
	return err
}

// replaceSlot forks a replacement for the worker of sl (only if it is still
// only, when that is not nil) and, once it listens where the old one did,
// puts it in the slot and retires the old one. A slot being refilled is
// skipped: its next worker runs the new program anyway.
func (s *supervisor) replaceSlot(ctx context.Context, sl *slot, only *Worker) error {
	s.mu.Lock()
	old := sl.w
	if old == nil || only != nil && old != only {
		s.mu.Unlock()
		return nil
	}
	want := old.listenedAddresses()
	nw, err := s.forkLocked(sl, old)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("clusternet: reload: forking the replacement of worker %d: %w", old.ID(), err)
	}
	sl.next = nw
	s.mu.Unlock()

	timeout := s.cfg.listenTimeout
	if timeout <= 0 {
		timeout = defaultReplaceTimeout
	}
	err = awaitListening(ctx, nw, old, want, timeout)
	s.mu.Lock()
	sl.next = nil
	if err != nil {
		delete(s.of, nw)
		if sl.w == nil && !s.stopping {
			// The old worker died while its replacement failed.
			s.scheduleLocked(sl, s.backoffLocked(sl, time.Now()))
		}
		s.mu.Unlock()
		return err
	}
	prev := sl.w // nil if the old worker died meanwhile
	delete(s.of, prev)
	if sl.removed {
		// Scale took the slot away meanwhile: the replacement goes too.
		delete(s.of, nw)
		s.mu.Unlock()
		return retire(ctx, nw, s.cfg.shutdownTimeout, s.log)
	}
	sl.w = nw
	s.mu.Unlock()
	if prev == nil {
		return nil
	}
	s.log.Info("replacement listening; disconnecting the old worker", "slot", sl.index, "new", nw.ID(), "old", prev.ID())
	return retire(ctx, prev, s.cfg.shutdownTimeout, s.log)
}

// awaitListening waits until nw, the replacement of old, listens on every
// address in want. If it does not within timeout, exits first, or ctx ends,
// nw is killed and the error says which, and how.
func awaitListening(ctx context.Context, nw, old *Worker, want map[string]bool, timeout time.Duration) error {
	expire := time.NewTimer(timeout)
	defer expire.Stop()
	var why string
	for why == "" {
		ok, note := nw.listensOn(want)
		if ok {
			return nil
		}
		select {
		case <-note:
		case <-nw.readerDone:
			why = "went away before it listened"
		case <-expire.C:
			why = fmt.Sprintf("did not listen within %v (missing: %s)", timeout, missing(nw, want))
		case <-ctx.Done():
			why = fmt.Sprintf("was still not listening when the reload's context ended (%v)", context.Cause(ctx))
		}
	}
	nw.Kill(os.Kill)
	<-nw.done
	how := nw.exitStatus().String()
	if err := nw.refusal(); err != nil {
		how = err.Error()
	}
	return fmt.Errorf("clusternet: reload aborted; the workers not yet replaced keep serving: worker %d (pid %d), the replacement of worker %d, %s: %s",
		nw.ID(), nw.Process().Pid, old.ID(), why, how)
}

// missing lists the addresses in want that w has not listened on.
func missing(w *Worker, want map[string]bool) string {
	have := w.listenedAddresses()
	var out []string
	for a := range want {
		if !have[a] {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return "none; the worker never reported online"
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// retire disconnects old and waits until it exits; after timeout it is
// killed. Without a timeout (Reload without Run), the end of ctx kills it
// too; under Run it is left to finish, within Run's own shutdown.
func retire(ctx context.Context, old *Worker, timeout time.Duration, log *slog.Logger) error {
	old.Disconnect()
	var expire <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expire = t.C
	}
	select {
	case <-old.done:
		return nil
	case <-expire:
		log.Warn("killing the old worker after the shutdown timeout", "id", old.ID(), "timeout", timeout)
		old.Kill(os.Kill)
		<-old.done
		return nil
	case <-ctx.Done():
		if timeout == 0 {
			old.Kill(os.Kill)
		}
		return fmt.Errorf("clusternet: reload: waiting for worker %d to finish: %w", old.ID(), ctx.Err())
	}
}
