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
	"slices"
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
	upgradeSignals         []os.Signal
	pidFile                string
	scaleUp, scaleDown     os.Signal
	maxMemory              uint64
	subreaper              bool
	memoryEvery            time.Duration
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
// within d of its fork (reported listening, or been given an address by the
// primary) is killed and replaced. Default: no check, for workers that do
// not listen. It is also how long a reload's replacement, and an upgrade's
// new primary, may take to listen before they are given up.
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

// supervisor is the state of a Run: n slots, each kept filled with a worker.
//
// A slot is refilled when its worker exits for any reason other than a
// reload replacing it or the shutdown, after a backoff of its own: one slot
// whose workers keep crashing does not delay the others, and the crash-loop
// guard stops the cluster only when no slot holds a healthy worker. Forks for
// slots run on Run's goroutine (tend) or in a reload, under s.mu, so that a
// worker is in a slot from the moment it exists.
type supervisor struct {
	cfg      runConfig
	log      *slog.Logger
	notify   *notifier // nil unless NOTIFY_SOCKET is set
	wake     chan struct{}
	upgraded chan struct{} // closed once Upgrade handed the cluster over

	exitMu sync.Mutex // a leaf: exited runs on the event dispatcher
	exits  []*Worker  // exited, not yet looked at

	mu       sync.Mutex
	slots    []*slot
	of       map[*Worker]*slot // the slot of every worker in one, serving or a reload's replacement
	deaths   []time.Time       // deaths of slots' workers within the crash-loop window
	stopping bool
	ready    bool // every slot's worker has listened once (READY=1)
	restarts int
	lastSlot int // the index of the newest slot
}

// slot is one of the n workers that Run keeps.
type slot struct {
	index   int         // 1..n, for the log
	w       *Worker     // the worker serving the slot; nil while it is refilled
	next    *Worker     // a reload's replacement, until it listens or fails
	env     []string    // the Fork env of the slot's workers
	deaths  []time.Time // the slot's deaths within the crash-loop window: its backoff
	failed  int         // forks for the slot that failed in a row: they back off too
	refill  *time.Timer // the pending refill
	due     bool        // the refill's backoff has passed
	removed bool        // Scale took the slot away
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
// Run holds n slots and converges to one live worker in each after any mix
// of deaths, reloads and failed forks. A worker that exits without a reload
// or the shutdown having asked it to is re-forked with the Fork env it had,
// after a backoff that doubles with each death of that slot's workers within
// the crash-loop window (a worker that was disconnected on purpose: the
// shortest backoff); a fork that fails is retried the same way. When more
// workers die within the window than WithCrashLoop allows and no slot holds
// a healthy worker (alive, and listening or not dying lately), Run shuts down
// and returns an error wrapping ErrCrashLoop that says which worker died how;
// a slot that keeps crashing beside healthy ones only backs off.
//
// While Run runs, an address whose workers have all died stays open for up
// to heldAddrTimeout, and the connections that arrive meanwhile wait (in the
// listen backlog, or accepted in the primary under SchedRR) for the first
// worker to listen there again. By default SIGTERM and SIGINT shut down and
// SIGHUP reloads (see Reload); RunOptions change that, the backoff, the
// timeouts and the logger. When NOTIFY_SOCKET is set (systemd's Type=notify),
// Run reports READY=1 once every first worker has listened, RELOADING=1 and
// READY=1 around a reload, STOPPING=1 at shutdown, and a STATUS= line with
// each.
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
		upgradeSignals:  upgradeSignals,
		memoryEvery:     memoryCheckEvery,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	s := &supervisor{cfg: cfg, log: cfg.logger, wake: make(chan struct{}, 1), upgraded: make(chan struct{}), of: make(map[*Worker]*slot)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.notify = newNotifier(s.log)
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

	// A primary that Upgrade started takes the old one's sockets first.
	if err := upgradeErr(); err != nil {
		return err
	}
	if cfg.pidFile != "" {
		if !inheritingUpgrade() { // else once it takes over: tookOver
			if err := writePIDFile(cfg.pidFile); err != nil {
				return err
			}
		}
		defer removePIDFile(cfg.pidFile)
	}

	sigs := make(chan os.Signal, 4)
	watched := slices.Concat(cfg.shutdownSignals, cfg.reloadSignals, cfg.upgradeSignals)
	for _, sig := range []os.Signal{cfg.scaleUp, cfg.scaleDown} {
		if sig != nil {
			watched = append(watched, sig)
		}
	}
	if len(watched) > 0 {
		signal.Notify(sigs, watched...)
		defer signal.Stop(sigs)
	}
	defer startReaper(s.log, cfg.subreaper)()
	s.mu.Lock()
	for range n {
		s.lastSlot++
		sl := &slot{index: s.lastSlot}
		s.slots = append(s.slots, sl)
		w, err := s.forkLocked(sl, nil)
		if err != nil {
			s.mu.Unlock()
			return s.shutdown(err)
		}
		sl.w = w
	}
	s.mu.Unlock()
	s.log.Info("cluster running", "workers", n, "policy", SchedulingPolicy())
	if SchedulingPolicy() == SchedReusePort {
		// Say which mechanism keeps queued connections: reloads hand the
		// sockets over either way (primary_listen.go, takeOwn).
		if reusePortMigrates() {
			s.log.Info("SchedReusePort: the kernel moves the queue of a socket whose worker leaves to the others (net.ipv4.tcp_migrate_req=1)")
		} else {
			s.log.Info("SchedReusePort: the primary accepts on the socket of a worker that leaves while others serve, and deals its connections to them, until a worker takes the socket back; net.ipv4.tcp_migrate_req=1 has the kernel move the queues instead")
		}
	}

	var reloadDone, upgradeDone chan error
	reloadCtx, cancelReload := context.WithCancel(ctx)
	defer cancelReload()
	var watching sync.WaitGroup
	if cfg.maxMemory > 0 {
		watching.Go(func() { s.watchMemory(reloadCtx, cfg.memoryEvery) })
	}
	stop := func(cause error) error {
		cancelReload()
		waitReload(reloadDone)
		waitReload(upgradeDone)
		watching.Wait()
		return s.shutdown(cause)
	}
	for {
		select {
		case <-ctx.Done():
			s.log.Info("shutting down", "reason", context.Cause(ctx))
			return stop(nil)
		case <-s.upgraded:
			// Upgrade handed the cluster over and drained the workers.
			cancelReload()
			waitReload(reloadDone)
			waitReload(upgradeDone)
			watching.Wait()
			s.log.Info("cluster handed over to the new primary")
			return nil
		case sig := <-sigs:
			if containsSignal(cfg.upgradeSignals, sig) {
				if upgradeDone != nil {
					s.log.Warn("upgrade already in progress", "signal", sig)
					continue
				}
				s.log.Info("upgrading", "signal", sig)
				upgradeDone = make(chan error, 1)
				go func(done chan<- error) { done <- s.upgrade(reloadCtx) }(upgradeDone)
				continue
			}
			if sig == cfg.scaleUp || sig == cfg.scaleDown {
				d := 1
				if sig == cfg.scaleDown {
					d = -1
				}
				if n := s.target() + d; n > 0 {
					s.log.Info("scaling", "signal", sig, "to", n)
					s.scale(n)
				}
				continue
			}
			if !containsSignal(cfg.reloadSignals, sig) {
				s.log.Info("shutting down", "signal", sig)
				return stop(nil)
			}
			if reloadDone != nil {
				s.log.Warn("reload already in progress", "signal", sig)
				continue
			}
			s.log.Info("reloading", "signal", sig)
			reloadDone = make(chan error, 1)
			go func(done chan<- error) { done <- s.reload(reloadCtx) }(reloadDone)
		case err := <-upgradeDone:
			upgradeDone = nil
			if err != nil {
				s.log.Error("upgrade failed; this primary keeps serving", "err", err)
			}
		case err := <-reloadDone:
			reloadDone = nil
			if err != nil {
				s.log.Error("reload failed", "err", err)
			} else {
				s.log.Info("reloaded")
			}
		case <-s.wake:
			if err := s.tend(); err != nil {
				return stop(err)
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
	s.exitMu.Lock()
	s.exits = append(s.exits, w)
	s.exitMu.Unlock()
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

// target is the number of workers Run keeps.
func (s *supervisor) target() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.slots)
}

// holding reports whether Run is serving: an address whose workers are all
// gone is then kept open for the next ones (primary_listen.go).
func (s *supervisor) holding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.stopping
}

// tend empties the slots whose workers exited, refills those whose backoff
// has passed, and reports readiness. It returns an error when workers die in
// a loop and no slot is healthy.
func (s *supervisor) tend() error {
	s.exitMu.Lock()
	exits := s.exits
	s.exits = nil
	s.exitMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil
	}
	now := time.Now()
	for _, w := range exits {
		sl := s.of[w]
		if sl == nil || sl.w != w {
			// Not Run's, a worker a reload replaced, or a reload's
			// replacement that failed: its reload has seen it.
			continue
		}
		delete(s.of, w)
		sl.w = nil
		if w.ExitedAfterDisconnect() {
			if sl.next == nil {
				s.scheduleLocked(sl, s.cfg.minBackoff)
			}
			continue
		}
		if err := s.diedLocked(sl, w, now); err != nil {
			return err
		}
	}
	for _, sl := range s.slots {
		if !sl.due {
			continue
		}
		sl.due = false
		if sl.w != nil || sl.next != nil {
			continue
		}
		w, err := s.forkLocked(sl, nil)
		if err != nil {
			sl.failed++
			s.scheduleLocked(sl, s.backoffLocked(sl, now))
			continue
		}
		sl.failed = 0
		sl.w = w
		s.restarts++
	}
	s.readyLocked()
	return nil
}

// diedLocked records the death of sl's worker w and schedules the refill,
// unless a reload's replacement is about to take the slot.
func (s *supervisor) diedLocked(sl *slot, w *Worker, now time.Time) error {
	s.deaths = append(recent(s.deaths, now, s.cfg.loopWindow), now)
	sl.deaths = append(recent(sl.deaths, now, s.cfg.loopWindow), now)
	if len(s.deaths) > s.cfg.loopDeaths && !s.healthyLocked(now) {
		return fmt.Errorf("%w: %d deaths within %v, more than %d, and no worker is healthy; the last: worker %d (pid %d), %v",
			ErrCrashLoop, len(s.deaths), s.cfg.loopWindow, s.cfg.loopDeaths, w.ID(), w.Process().Pid, w.exitStatus())
	}
	if sl.next != nil {
		return nil // the replacement takes the slot, or its reload refills it
	}
	delay := s.backoffLocked(sl, now)
	s.scheduleLocked(sl, delay)
	s.log.Info("re-forking", "slot", sl.index, "after", delay, "replacing", w.ID())
	return nil
}

// recent returns the times in ts that are within window of now.
func recent(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	kept := ts[:0]
	for _, t := range ts {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	return kept
}

// healthyLocked reports whether any slot holds a worker that is alive and
// either listening or of a slot that has not died within the window.
func (s *supervisor) healthyLocked(now time.Time) bool {
	for _, sl := range s.slots {
		w := sl.w
		if w == nil || w.IsDead() {
			continue
		}
		if len(w.listenedAddresses()) > 0 || len(recent(sl.deaths, now, s.cfg.loopWindow)) == 0 {
			return true
		}
	}
	return false
}

// backoffLocked is how long sl waits before its next fork: the shortest
// backoff, doubled for each death within the window and each failed fork
// in a row.
func (s *supervisor) backoffLocked(sl *slot, now time.Time) time.Duration {
	sl.deaths = recent(sl.deaths, now, s.cfg.loopWindow)
	k := len(sl.deaths) + sl.failed
	delay := s.cfg.minBackoff
	for ; k > 1 && delay < s.cfg.maxBackoff; k-- {
		delay *= 2
	}
	return min(delay, s.cfg.maxBackoff)
}

// scheduleLocked refills sl after delay, unless a refill is pending.
func (s *supervisor) scheduleLocked(sl *slot, delay time.Duration) {
	if sl.refill != nil {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.mu.Lock() // held by scheduleLocked until t is set
		if sl.refill == t {
			sl.refill = nil
			sl.due = true
		}
		s.mu.Unlock()
		s.kick()
	})
	sl.refill = t
}

// forkLocked forks a worker for sl and arms the listen health check. The
// fork runs under s.mu (s.mu comes before cluster.mu), so that the
// shutdown, which sets stopping under it, never misses a worker.
func (s *supervisor) forkLocked(sl *slot, replaces *Worker) (*Worker, error) {
	if s.stopping {
		return nil, errors.New("clusternet: the cluster is shutting down")
	}
	w, err := forkWorker(sl.env, replaces)
	if err != nil {
		s.log.Error("fork failed", "slot", sl.index, "err", err)
		return nil, err
	}
	sl.env = w.env
	s.of[w] = sl
	s.log.Info("forked", "slot", sl.index, "id", w.ID(), "pid", w.Process().Pid)
	if d := s.cfg.listenTimeout; d > 0 {
		time.AfterFunc(d, func() {
			// A worker the primary has given an address listens, though
			// its report may not be read yet: it may be accepting, and a
			// kill would reset what it accepted.
			if len(w.listenedAddresses()) > 0 || len(w.subscriptions(false)) > 0 || w.IsDead() {
				return
			}
			s.log.Warn("worker did not listen in time; replacing it", "id", w.ID(), "timeout", d)
			w.Kill(os.Kill)
		})
	}
	return w, nil
}

// readyLocked tells the service manager that the cluster is ready, once
// every slot's first worker has listened.
func (s *supervisor) readyLocked() {
	if s.ready {
		return
	}
	for _, sl := range s.slots {
		if sl.w == nil || len(sl.w.listenedAddresses()) == 0 {
			return
		}
	}
	s.ready = true
	upgradePoke()
	if inheritingUpgrade() {
		return // the old primary says READY=1, with this one's pid
	}
	s.notify.send("READY=1", fmt.Sprintf("STATUS=serving: %d workers listening", len(s.slots)))
}

// awaitReady waits until every slot's first worker has listened (Run's
// READY=1), d passes, or ctx ends, whichever comes first: workers that never
// listen do not hold an upgrade up for longer than d.
func (s *supervisor) awaitReady(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		ready := s.ready
		s.mu.Unlock()
		if ready || ctx.Err() != nil || time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upgrade is Upgrade under Run.
func (s *supervisor) upgrade(ctx context.Context) error { return upgradeCluster(ctx, s) }

// handOff stops Run's supervision for an upgrade that commits: no refills,
// no held addresses. It reports false if the cluster is shutting down.
func (s *supervisor) handOff() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.stopLocked()
	return true
}

// stopLocked stops the supervision: no more forks. Called with s.mu held.
func (s *supervisor) stopLocked() {
	s.stopping = true
	for _, sl := range s.slots {
		if sl.refill != nil {
			sl.refill.Stop()
			sl.refill = nil
		}
	}
}

// tookOver runs when this primary, which Upgrade started, is in charge.
func (s *supervisor) tookOver() {
	s.log.Info("took over the cluster from the old primary")
	s.mu.Lock()
	s.ready = true // the old primary said READY=1 for this one, with its MAINPID
	s.mu.Unlock()
	if s.cfg.pidFile != "" {
		if err := writePIDFile(s.cfg.pidFile); err != nil {
			s.log.Error("cannot write the PID file", "err", err)
		}
	}
}

// upgradeReady reports whether every slot has a worker that is online and,
// with listens, has listened: a primary that Upgrade started is then ready
// to take over.
func (s *supervisor) upgradeReady(listens bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.slots) == 0 {
		return false
	}
	for _, sl := range s.slots {
		if sl.w == nil {
			return false
		}
		if st := sl.w.State(); st != StateOnline && st != StateListening {
			return false
		}
		if listens && len(sl.w.listenedAddresses()) == 0 {
			return false
		}
	}
	return true
}

// shutdown disconnects every worker, kills those still running after the
// shutdown timeout, waits for all to exit and returns cause.
func (s *supervisor) shutdown(cause error) error {
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()
	status := "STATUS=stopping: disconnecting the workers"
	if cause != nil {
		status = "STATUS=stopping: " + cause.Error()
	}
	s.notify.send("STOPPING=1", status)
	drainWorkers(context.Background(), s.cfg.shutdownTimeout, s.log)
	closeAllAddrs()
	s.log.Info("cluster stopped")
	return cause
}

// drainWorkers disconnects every worker and waits until all have exited;
// those still running after timeout (if not 0) or when ctx ends are
// killed.
func drainWorkers(ctx context.Context, timeout time.Duration, log *slog.Logger) {
	ws := aliveWorkers()
	for _, w := range ws {
		w.Disconnect()
	}
	var expire <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expire = t.C
	}
	for _, w := range ws {
		select {
		case <-w.done:
			continue
		case <-expire:
		case <-ctx.Done():
		}
		for _, w := range ws {
			if !w.IsDead() {
				log.Warn("killing worker after the shutdown timeout", "id", w.ID(), "timeout", timeout)
				w.Kill(os.Kill)
			}
		}
		break
	}
	for _, w := range ws {
		<-w.done
	}
}
