package clusternet

// Runs in the primary: Reload, the rolling restart.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

func waitReload(done chan error) {
	if done != nil {
		<-done
	}
}

// Reload restarts every worker, one at a time, without refusing a
// connection: it forks a replacement (with the Fork env of the old one),
// waits until the replacement listens wherever the old worker listened, then
// disconnects the old one and waits for it to finish its connections. While
// Run is running, an old worker still running after the shutdown timeout is
// killed; ctx bounds the whole reload. It returns ErrNotPrimary in a worker,
// or the first error (a replacement that fails to start or to listen).
func Reload(ctx context.Context) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	var timeout time.Duration
	log := slog.New(slog.DiscardHandler)
	if s := runningSupervisor(); s != nil {
		timeout, log = s.cfg.shutdownTimeout, s.log
	}
	return reload(ctx, timeout, log)
}

var reloadMu sync.Mutex // one reload at a time

func reload(ctx context.Context, oldTimeout time.Duration, log *slog.Logger) error {
	reloadMu.Lock()
	defer reloadMu.Unlock()
	for _, old := range Workers() {
		if err := replace(ctx, old, oldTimeout, log); err != nil {
			return err
		}
	}
	return nil
}

func replace(ctx context.Context, old *Worker, oldTimeout time.Duration, log *slog.Logger) error {
	want := old.listenedAddresses()
	var nw *Worker
	var err error
	if s := runningSupervisor(); s != nil {
		nw, err = s.fork(old.env)
	} else {
		nw, err = Fork(old.env...)
	}
	if err != nil {
		return fmt.Errorf("clusternet: reload: replacing worker %d: %w", old.ID(), err)
	}
	for {
		ok, note := nw.listensOn(want)
		if ok {
			break
		}
		select {
		case <-note:
		case <-nw.readerDone:
			return fmt.Errorf("clusternet: reload: worker %d, replacing worker %d, went away before it listened", nw.ID(), old.ID())
		case <-ctx.Done():
			nw.Kill(os.Kill)
			return fmt.Errorf("clusternet: reload: waiting for worker %d to listen: %w", nw.ID(), ctx.Err())
		}
	}
	log.Info("replacement listening; disconnecting the old worker", "new", nw.ID(), "old", old.ID())
	old.Disconnect()
	var expire <-chan time.Time
	if oldTimeout > 0 {
		t := time.NewTimer(oldTimeout)
		defer t.Stop()
		expire = t.C
	}
	select {
	case <-old.done:
		return nil
	case <-expire:
		log.Warn("killing the old worker after the shutdown timeout", "id", old.ID(), "timeout", oldTimeout)
		old.Kill(os.Kill)
		<-old.done
		return nil
	case <-ctx.Done():
		old.Kill(os.Kill)
		return fmt.Errorf("clusternet: reload: waiting for worker %d to finish: %w", old.ID(), ctx.Err())
	}
}
