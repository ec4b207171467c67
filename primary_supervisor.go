package clusternet

// Runs in the primary: Run, the supervisor that keeps n workers, re-forks
// those that die, and shuts down gracefully.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// ErrCrashLoop is wrapped by the error Run returns when workers die faster
// than WithCrashLoop allows.
var ErrCrashLoop = errors.New("clusternet: workers are dying in a loop")

// RunOption configures Run.
type RunOption func(*runConfig)

type runConfig struct {
	minBackoff, maxBackoff time.Duration
	loopDeaths             int
	loopWindow             time.Duration
	shutdownTimeout        time.Duration
	listenTimeout          time.Duration
	shutdownSignals        []os.Signal
	reloadSignals          []os.Signal
	logger                 *slog.Logger
}

// WithBackoff sets how long Run waits before it re-forks a worker that died:
// min after one death, doubling with each death in the crash-loop window,
// up to max. Default 100ms to 10s.
func WithBackoff(min, max time.Duration) RunOption {
	return func(c *runConfig) { c.minBackoff, c.maxBackoff = min, max }
}

// WithCrashLoop makes Run give up, shut the cluster down and return an error
// wrapping ErrCrashLoop when more than deaths workers die within window.
// Default: 2n+3 deaths within 30s for n workers.
func WithCrashLoop(deaths int, window time.Duration) RunOption {
	return func(c *runConfig) { c.loopDeaths, c.loopWindow = deaths, window }
}

// WithShutdownTimeout sets how long a graceful shutdown, or the old worker
// of a reload, may take before the workers still running are killed.
// Default 30s.
func WithShutdownTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.shutdownTimeout = d }
}

// WithListenTimeout is Run's health check: a worker that has not listened
// within d of its fork is killed and replaced. Default: no check, for
// workers that do not listen.
func WithListenTimeout(d time.Duration) RunOption {
	return func(c *runConfig) { c.listenTimeout = d }
}

// WithShutdownSignals sets the signals on which Run shuts down gracefully.
// Default SIGTERM and SIGINT (os.Interrupt on Windows); none turns it off.
func WithShutdownSignals(sigs ...os.Signal) RunOption {
	return func(c *runConfig) { c.shutdownSignals = sigs }
}

// WithReloadSignals sets the signals on which Run reloads (see Reload).
// Default SIGHUP on Unix; none turns it off.
func WithReloadSignals(sigs ...os.Signal) RunOption {
	return func(c *runConfig) { c.reloadSignals = sigs }
}

// WithLogger makes Run log what it does (forks, deaths, respawns, reloads,
// shutdown) to l. By default it logs nothing.
func WithLogger(l *slog.Logger) RunOption {
	return func(c *runConfig) { c.logger = l }
}

// supervisor is the state of a Run.
type supervisor struct {
	cfg runConfig
	log *slog.Logger

	mu       sync.Mutex
	wake     chan struct{} // something in deaths or due changed
	exits    []*Worker     // exited, not yet looked at
	due      int           // respawns whose backoff has passed
	timers   map[*time.Timer]bool
	deaths   []time.Time
	stopping bool
	restarts int
}

var running struct {
	mu  sync.Mutex
	sup *supervisor
}

func runningSupervisor() *supervisor {
	running.mu.Lock()
	defer running.mu.Unlock()
	return running.sup
}

// Run keeps n workers running (n <= 0: one per CPU) until ctx ends or a
// shutdown signal arrives, then shuts the cluster down gracefully: every
// worker is disconnected, those still running after the shutdown timeout are
// killed, and Run returns nil once all have exited.
//
// A worker that dies without having been disconnected is re-forked with the
// Fork env it had, after a backoff; when workers die faster than the
// crash-loop limit, Run shuts down and returns an error wrapping
// ErrCrashLoop that says which worker died how. By default SIGTERM and
// SIGINT shut down and SIGHUP reloads (see Reload); RunOptions change that,
// the backoff, the timeouts and the logger.
//
// Run returns ErrNotPrimary in a worker, and an error if another Run is in
// progress or the first workers cannot be forked.
func Run(ctx context.Context, n int, opts ...RunOption) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	if n <= 0 {
		n = runtime.NumCPU()
	}
	cfg := runConfig{
		minBackoff:      100 * time.Millisecond,
		maxBackoff:      10 * time.Second,
		loopDeaths:      2*n + 3,
		loopWindow:      30 * time.Second,
		shutdownTimeout: 30 * time.Second,
		shutdownSignals: []os.Signal{os.Interrupt, syscall.SIGTERM},
		reloadSignals:   reloadSignals,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	s := &supervisor{cfg: cfg, log: cfg.logger, wake: make(chan struct{}, 1), timers: make(map[*time.Timer]bool)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	running.mu.Lock()
	if running.sup != nil {
		running.mu.Unlock()
		return errors.New("clusternet: Run is already running")
	}
	running.sup = s
	running.mu.Unlock()
	defer func() {
		running.mu.Lock()
		running.sup = nil
		running.mu.Unlock()
	}()

	sigs := make(chan os.Signal, 4)
	if watched := append(append([]os.Signal(nil), cfg.shutdownSignals...), cfg.reloadSignals...); len(watched) > 0 {
		signal.Notify(sigs, watched...)
		defer signal.Stop(sigs)
	}
	for range n {
		if _, err := s.fork(nil); err != nil {
			return s.shutdown(err)
		}
	}
	s.log.Info("cluster running", "workers", n, "policy", SchedulingPolicy())

	var reloadDone chan error
	reloadCtx, cancelReload := context.WithCancel(ctx)
	defer cancelReload()
	for {
		select {
		case <-ctx.Done():
			s.log.Info("shutting down", "reason", context.Cause(ctx))
			cancelReload()
			waitReload(reloadDone)
			return s.shutdown(nil)
		case sig := <-sigs:
			if !containsSignal(cfg.reloadSignals, sig) {
				s.log.Info("shutting down", "signal", sig)
				cancelReload()
				waitReload(reloadDone)
				return s.shutdown(nil)
			}
			if reloadDone != nil {
				s.log.Warn("reload already in progress", "signal", sig)
				continue
			}
			s.log.Info("reloading", "signal", sig)
			reloadDone = make(chan error, 1)
			go func(done chan<- error) { done <- reload(reloadCtx, cfg.shutdownTimeout, s.log) }(reloadDone)
		case err := <-reloadDone:
			reloadDone = nil
			if err != nil {
				s.log.Error("reload failed", "err", err)
			} else {
				s.log.Info("reloaded")
			}
		case <-s.wake:
			if err := s.tend(); err != nil {
				cancelReload()
				waitReload(reloadDone)
				return s.shutdown(err)
			}
		}
	}
}

func containsSignal(sigs []os.Signal, sig os.Signal) bool {
	for _, s := range sigs {
		if s == sig {
			return true
		}
	}
	return false
}

// exited is called from the exit event of every worker while Run is running.
func (s *supervisor) exited(w *Worker, status ExitStatus) {
	s.mu.Lock()
	s.exits = append(s.exits, w)
	s.mu.Unlock()
	s.kick()
	if !w.ExitedAfterDisconnect() {
		s.log.Warn("worker died", "id", w.ID(), "pid", w.Process().Pid, "status", status.String())
	}
}

func (s *supervisor) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// tend looks at the workers that exited and re-forks those whose backoff has
// passed. It returns an error when workers die in a loop.
func (s *supervisor) tend() error {
	s.mu.Lock()
	exits := s.exits
	s.exits = nil
	due := s.due
	s.due = 0
	s.mu.Unlock()
	for _, w := range exits {
		if w.ExitedAfterDisconnect() {
			continue // disconnected on purpose: a reload or a shutdown
		}
		if err := s.died(w); err != nil {
			return err
		}
	}
	for range due {
		s.fork(nil)
	}
	return nil
}

// died records a death and schedules the respawn.
func (s *supervisor) died(w *Worker) error {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.deaths[:0]
	for _, t := range s.deaths {
		if now.Sub(t) < s.cfg.loopWindow {
			kept = append(kept, t)
		}
	}
	s.deaths = append(kept, now)
	if len(s.deaths) > s.cfg.loopDeaths {
		return fmt.Errorf("%w: %d deaths within %v, more than %d; the last: worker %d (pid %d), %v",
			ErrCrashLoop, len(s.deaths), s.cfg.loopWindow, s.cfg.loopDeaths, w.ID(), w.Process().Pid, w.exitStatus())
	}
	delay := s.cfg.minBackoff << (len(s.deaths) - 1)
	if delay > s.cfg.maxBackoff || delay <= 0 {
		delay = s.cfg.maxBackoff
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.mu.Lock()
		if s.timers[t] {
			delete(s.timers, t)
			s.due++
		}
		s.mu.Unlock()
		s.kick()
	})
	s.timers[t] = true
	s.restarts++
	s.log.Info("re-forking", "after", delay, "replacing", w.ID())
	return nil
}

// fork forks a worker with env and arms the listen health check.
func (s *supervisor) fork(env []string) (*Worker, error) {
	w, err := Fork(env...)
	if err != nil {
		s.log.Error("fork failed", "err", err)
		return nil, err
	}
	s.log.Info("forked", "id", w.ID(), "pid", w.Process().Pid)
	if d := s.cfg.listenTimeout; d > 0 {
		time.AfterFunc(d, func() {
			if ok, _ := w.listensOn(nil); ok && len(w.listenedAddresses()) > 0 || w.IsDead() {
				return
			}
			s.log.Warn("worker did not listen in time; replacing it", "id", w.ID(), "timeout", d)
			w.Kill(os.Kill)
		})
	}
	return w, nil
}

// shutdown disconnects every worker, kills those still running after the
// shutdown timeout, waits for all to exit and returns cause.
func (s *supervisor) shutdown(cause error) error {
	s.mu.Lock()
	s.stopping = true
	for t := range s.timers {
		t.Stop()
	}
	clear(s.timers)
	s.mu.Unlock()
	ws := aliveWorkers()
	for _, w := range ws {
		w.Disconnect()
	}
	timeout := time.NewTimer(s.cfg.shutdownTimeout)
	defer timeout.Stop()
	for _, w := range ws {
		select {
		case <-w.done:
			continue
		case <-timeout.C:
		}
		for _, w := range ws {
			if !w.IsDead() {
				s.log.Warn("killing worker after the shutdown timeout", "id", w.ID(), "timeout", s.cfg.shutdownTimeout)
				w.Kill(os.Kill)
			}
		}
		break
	}
	for _, w := range ws {
		<-w.done
	}
	closeAllAddrs()
	s.log.Info("cluster stopped")
	return cause
}
