package clusternet

// Shared: counters, in the primary and in a worker.

import (
	"errors"
	"expvar"
	"sync"
	"sync/atomic"
	"time"
)

// WorkerStats counts what went through one worker.
type WorkerStats struct {
	ID int
	// Handed counts the connections the primary handed to the worker
	// (SchedRR); in a worker, the connections it was handed.
	Handed uint64
	// Accepted counts the connections the worker's Accept returned.
	Accepted uint64
	// InFlight is, in the primary, the connections handed to the worker and
	// not yet accepted; in a worker, the connections its listeners handed
	// out that are still open.
	InFlight int
	// MessagesIn and MessagesOut count messages received from and sent to
	// the other side.
	MessagesIn, MessagesOut uint64
	// MessagesDropped counts messages received that did not decode (not
	// valid JSON or Gob): each is dropped and reported in an error event,
	// one event for those that arrive while it waits for the handlers.
	MessagesDropped uint64
	// OutputDropped counts, in the primary with Settings.Silent, the bytes
	// of the worker's stdout and stderr dropped unread: Worker.Stdout and
	// Stderr keep the newest 1 MiB each.
	OutputDropped uint64
	// Uptime is how long the worker has run: since its fork in the
	// primary, since its start in a worker.
	Uptime time.Duration
	// RSS is the worker's resident memory in bytes and CPU the processor
	// time it has used (user and system), read from /proc on Linux; zero
	// where ResourcesErr says why they could not be read (other systems:
	// not implemented).
	RSS          uint64
	CPU          time.Duration
	ResourcesErr error `json:"-"`
}

// errResourcesUnsupported says that RSS and CPU are read on Linux only.
var errResourcesUnsupported = errors.New("clusternet: per-worker memory and CPU are read on Linux only")

// workerCounters are the counters behind WorkerStats.
type workerCounters struct {
	handed, accepted        atomic.Uint64
	messagesIn, messagesOut atomic.Uint64
	messagesDropped         atomic.Uint64
}

// Stats returns the worker's counters. In the primary they are the
// primary's view of the worker; in a worker (Self().Stats()), the worker's own.
func (w *Worker) Stats() WorkerStats {
	st := WorkerStats{ID: w.id}
	if w.self {
		st.InFlight = w.listeners.conns.inFlight()
	}
	for _, sub := range w.subscriptions(false) {
		// Looking at the queue first counts what left it as accepted.
		sub.sa.mu.Lock()
		if sub.handoff {
			sub.look()
			st.InFlight += sub.queued
		}
		sub.sa.mu.Unlock()
	}
	st.Handed = w.stats.handed.Load()
	st.Accepted = w.stats.accepted.Load()
	st.MessagesIn = w.stats.messagesIn.Load()
	st.MessagesOut = w.stats.messagesOut.Load()
	st.MessagesDropped = w.stats.messagesDropped.Load()
	st.OutputDropped = w.stdout.droppedBytes() + w.stderr.droppedBytes()
	if !w.started.IsZero() {
		st.Uptime = time.Since(w.started)
	}
	if w.proc != nil && !w.IsDead() {
		st.RSS, st.CPU, st.ResourcesErr = processResources(w.proc.Pid)
	}
	return st
}

// ClusterStats counts what went through the primary.
type ClusterStats struct {
	Workers  int // live workers, as in Workers()
	Forks    int // workers forked so far
	Restarts int // workers Run re-forked after they died
	Target   int // workers Run keeps (Scale changes it); 0 without Run
	Servers  int // addresses shared with workers
	Pending  int // connections accepted and waiting for a worker with credit (SchedRR), or for a worker (SchedReusePort, Retired)

	// SchedReusePort: who keeps the connections queued on the socket of a
	// worker that leaves while others stay (it is disconnected, dies, or
	// Run scales down): "kernel" where net.ipv4.tcp_migrate_req moves them
	// to the other sockets, "primary" where the primary keeps the socket,
	// accepts on it and deals to the workers (docs/guarantees.md).
	ReusePortQueues string
	Retired         int    // SchedReusePort: sockets the primary accepts on for workers that left
	Adopted         uint64 // SchedReusePort: connections the primary accepted on those and dealt to workers

	PerWorker []WorkerStats
}

// Stats returns the primary's counters, with those of every live worker.
func Stats() ClusterStats {
	cluster.mu.Lock()
	st := ClusterStats{Workers: len(cluster.workers), Forks: cluster.lastID, Servers: len(cluster.addrs)}
	addrs := make([]*sharedAddr, 0, len(cluster.addrs))
	for _, sa := range cluster.addrs {
		addrs = append(addrs, sa)
	}
	cluster.mu.Unlock()
	for _, sa := range addrs {
		sa.mu.Lock()
		st.Pending += len(sa.pending)
		st.Retired += len(sa.retired)
		sa.mu.Unlock()
	}
	st.ReusePortQueues, st.Adopted = reusePortQueues(), adopted.Load()
	if s := runningSupervisor(); s != nil {
		s.mu.Lock()
		st.Restarts = s.restarts
		st.Target = len(s.slots)
		s.mu.Unlock()
	}
	for _, w := range Workers() {
		st.PerWorker = append(st.PerWorker, w.Stats())
	}
	return st
}

var publishOnce sync.Once

// PublishExpvar publishes the cluster's statistics with expvar under the
// name "clusternet": Stats() in the primary, Self().Stats() in a worker.
// Calling it again does nothing.
func PublishExpvar() {
	publishOnce.Do(func() {
		expvar.Publish("clusternet", expvar.Func(func() any {
			if w := Self(); w != nil {
				return w.Stats()
			}
			return Stats()
		}))
	})
}
