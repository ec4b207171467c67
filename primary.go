package clusternet

// Runs in the primary: settings, the cluster's state, Fork, Workers,
// Disconnect and the primary-wide events.

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Settings is how the primary forks workers, as Node's cluster.settings.
// Zero fields take their defaults (see CurrentSettings).
type Settings struct {
	Exec          string        // the program to run; default os.Executable()
	Args          []string      // its arguments; nil means os.Args[1:]
	Dir           string        // its working directory (Node cwd); default: the primary's
	Env           []string      // "KEY=value" added to every worker's environment
	Serialization Serialization // JSON (default) or Gob (Node "advanced")
	NodeIPC       bool          // workers are Node.js programs (Exec is node, Args its script): Node's own IPC and cluster protocols, see docs/node-workers.md; Unix only
	NodeWindow    int           // with NodeIPC under SchedRR: connections in flight per Node worker and address; 0 or 1 is Node's own flow control, up to 32 pipelines them (docs/node-workers.md)
	Silent        bool          // worker stdout/stderr to Worker.Stdout()/Stderr() instead of the primary's; each keeps the newest 1 MiB unread (older output is dropped, counted in WorkerStats.OutputDropped)
	Stdin         io.Reader     // Node stdio; set ones override Silent
	Stdout        io.Writer
	Stderr        io.Writer
	ExtraFiles    []*os.File // the worker's descriptors 3, 4, ... (Node stdio past 2); nil entries are closed. Windows: inherited at their handle values
	Uid, Gid      *int       // run the worker as this user/group (Unix)
	WindowsHide   bool       // hide the worker's console window (Windows)

	// AllowListen, if set, is asked before the primary binds or shares an
	// address for a worker; an error refuses the worker's Listen with it.
	// It exists for a primary with privileges its workers lack (root binding
	// port 80 for workers running as an unprivileged Uid/Gid): without it a
	// compromised worker could ask the primary to bind any port (22) or
	// create a socket file anywhere the primary may (/etc). network and
	// address are as the worker asked ("127.0.0.1:ssh" and "tcp :22" name
	// port 22 too): compare them with an allow-list of exact strings rather
	// than parsing them. For a Unix socket file, address is the clean
	// absolute path the primary will bind (a relative path is resolved
	// against the worker's working directory); the primary follows no
	// symbolic link on it. See docs/security.md.
	AllowListen func(w *Worker, network, address string) error

	// SocketMode is the permission of the Unix socket files the primary
	// creates for workers; default 0600 (owner only). On Linux the file is
	// never visible with a looser mode.
	SocketMode os.FileMode

	// MaxMessageSize bounds one message, in bytes, in both directions: Send
	// refuses larger ones and a peer that sends one is disconnected.
	// Default DefaultMaxMessageSize. It also bounds what the primary queues
	// for a worker that does not read its channel: past 4 × MaxMessageSize
	// (at least 16 MiB) unwritten, the worker is disconnected, with an
	// error event.
	MaxMessageSize int

	// DieOnSignal gives workers the default action of SIGINT and SIGTERM:
	// they die at once. By default a worker drains on either instead, as
	// when the primary disconnects it: it stops accepting, finishes the
	// connections it has, and exits with code 0, leaving what follows to
	// the primary (Run shuts the cluster down if the signal reached it too,
	// as Ctrl-C in a terminal and systemd's KillMode=control-group do, and
	// re-forks the worker otherwise). A second signal of the two kills the
	// worker at once. See docs/operations.md.
	DieOnSignal bool
}

// DefaultMaxMessageSize is the default Settings.MaxMessageSize: 64 MiB.
const DefaultMaxMessageSize = 64 << 20

// The environment a worker is started with.
const (
	envWorkerID      = "CLUSTERNET_WORKER_ID"
	envChannel       = "CLUSTERNET_CHANNEL"
	envSerialization = "CLUSTERNET_SERIALIZATION"
	envMaxMessage    = "CLUSTERNET_MAX_MESSAGE"
	envDieOnSignal   = "CLUSTERNET_DIE_ON_SIGNAL"
)

// cluster is the primary's state.
var cluster struct {
	mu        sync.Mutex
	settings  Settings
	policy    Policy
	policyErr error // a bad CLUSTERNET_SCHED_POLICY, reported by Fork
	frozen    bool  // the policy can no longer change
	lastID    int
	workers   map[int]*Worker
	alive     map[*Worker]bool       // every worker until its exit event, even after it left workers
	addrs     map[string]*sharedAddr // by network|address
	binding   map[string]*binding    // addresses being bound for a worker, by network|address

	onFork       handlers[func(*Worker)]
	onOnline     handlers[func(*Worker)]
	onListening  handlers[func(*Worker, Address)]
	onMessage    handlers[func(*Worker, Message)]
	onDisconnect handlers[func(*Worker)]
	onExit       handlers[func(*Worker, ExitStatus)]
	onSetup      handlers[func(Settings)]
}

func init() {
	cluster.policy, cluster.policyErr = defaultPolicy()
	cluster.workers = make(map[int]*Worker)
	cluster.alive = make(map[*Worker]bool)
	cluster.addrs = make(map[string]*sharedAddr)
	cluster.binding = make(map[string]*binding)
}

// IsPrimary reports whether this process is not a worker (Node's
// cluster.isPrimary): CLUSTERNET_WORKER_ID was not set when it started.
func IsPrimary() bool { return !IsWorker() }

// withDefaults returns s with its zero fields filled in.
func (s Settings) withDefaults() Settings {
	if s.Exec == "" {
		if exe, err := os.Executable(); err == nil {
			s.Exec = exe
		} else {
			s.Exec = os.Args[0]
		}
	}
	if s.Args == nil {
		s.Args = slices.Clone(os.Args[1:])
	}
	if s.SocketMode == 0 {
		s.SocketMode = 0o600
	}
	if s.MaxMessageSize <= 0 {
		s.MaxMessageSize = DefaultMaxMessageSize
	}
	return s
}

func (s *Settings) validate() error {
	if !s.Serialization.valid() {
		return fmt.Errorf("clusternet: unknown serialization %d (want JSON or Gob)", int(s.Serialization))
	}
	if err := checkEnv(s.Env); err != nil {
		return fmt.Errorf("clusternet: Settings.Env: %w", err)
	}
	return nil
}

// SetupPrimary replaces the settings that later forks use (workers already
// running keep theirs), freezes the scheduling policy and emits the setup
// event. Zero fields take their defaults; to change one field, start from
// CurrentSettings. It returns ErrNotPrimary in a worker.
func SetupPrimary(s Settings) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	if err := s.validate(); err != nil {
		return err
	}
	s = s.withDefaults()
	cluster.mu.Lock()
	cluster.settings = s
	cluster.frozen = true
	cluster.mu.Unlock()
	events.post(func() {
		for _, fn := range cluster.onSetup.list() {
			fn(s)
		}
	})
	return nil
}

// CurrentSettings returns the settings the next Fork uses, with defaults
// filled in (Node's cluster.settings).
func CurrentSettings() Settings {
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	return cluster.settings.withDefaults()
}

// Fork starts a new worker process and returns it; its fork event follows.
// env entries, "KEY=value", are added to the worker's environment and
// override the primary's and Settings.Env. It returns ErrNotPrimary in a
// worker, and the start error (a missing program, a bad Dir...) otherwise.
func Fork(env ...string) (*Worker, error) { return forkWorker(env, nil) }

// forkWorker is Fork. A reload's replacement names the worker it replaces,
// before anything the new worker sends can be read: under SchedReusePort it
// takes over that worker's sockets (primary_listen.go).
func forkWorker(env []string, replaces *Worker) (*Worker, error) {
	if IsWorker() {
		return nil, ErrNotPrimary
	}
	if err := checkEnv(env); err != nil {
		return nil, fmt.Errorf("clusternet: Fork: %w", err)
	}
	// Inherited sockets become close-on-exec before any fork; a primary
	// that Upgrade started takes the old one's sockets first.
	if err := upgradeErr(); err != nil {
		return nil, err
	}
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	if cluster.policyErr != nil {
		return nil, cluster.policyErr
	}
	cluster.frozen = true
	s := cluster.settings.withDefaults()
	id := cluster.lastID + 1

	stdio, err := prepareStdio(&s)
	if err != nil {
		return nil, fmt.Errorf("clusternet: fork worker %d: %w", id, err)
	}
	conn, childEnd, err := channelPair()
	if err != nil {
		stdio.abort()
		return nil, fmt.Errorf("clusternet: fork worker %d: %w", id, err)
	}
	wenv, err := forkEnv(&s, id, env)
	var proc *os.Process
	if err == nil {
		proc, err = startProcess(&s, wenv, stdio, childEnd)
	}
	closeHandles([]sysHandle{childEnd})
	if err != nil {
		stdio.abort()
		conn.close()
		return nil, fmt.Errorf("clusternet: fork worker %d: %w", id, err)
	}
	stdio.started()
	cluster.lastID = id

	w := &Worker{
		id:         id,
		proc:       proc,
		ch:         newChannel(conn, s.MaxMessageSize+1),
		codec:      s.Serialization,
		max:        s.MaxMessageSize,
		connected:  true,
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		stdout:     stdio.stdout,
		stderr:     stdio.stderr,
		subs:       make(map[uint32]*subscription),
		env:        env,
		listenNote: make(chan struct{}),
		started:    time.Now(),
		replaces:   replaces,
	}
	w.ch.limit = sendQueueLimit(s.MaxMessageSize) // before anything is sent
	if s.NodeIPC {
		w.node = newNodeWorker(w, &s)
	}
	cluster.workers[id] = w
	cluster.alive[w] = true
	events.post(func() {
		for _, fn := range cluster.onFork.list() {
			fn(w)
		}
	})
	go w.serve()
	go w.wait()
	return w, nil
}

func checkEnv(env []string) error {
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("environment entry %q is not KEY=value", kv)
		}
	}
	return nil
}

// workerEnv is the primary's environment, then Settings.Env, then the fork's
// env, then the worker's identity; later entries win.
func workerEnv(s *Settings, id int, extra []string) []string {
	env := slices.Concat(os.Environ(), s.Env, extra, []string{
		envWorkerID + "=" + strconv.Itoa(id),
		envSerialization + "=" + s.Serialization.String(),
		envMaxMessage + "=" + strconv.Itoa(s.MaxMessageSize),
		envDieOnSignal + "=" + strconv.FormatBool(s.DieOnSignal),
	})
	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(env[i], "=")
		if k == "" {
			// Windows keeps per-drive directories as "=C:=C:\dir": keep them as they are.
			out = append(out, env[i])
			continue
		}
		if envCaseInsensitive {
			k = strings.ToUpper(k)
		}
		if seen[k] || k == envChannel {
			continue
		}
		seen[k] = true
		out = append(out, env[i])
	}
	slices.Reverse(out)
	return out
}

// Workers returns the live workers, by ID (Node's cluster.workers). A worker
// leaves the list when it is disconnected or killed from the primary, and
// otherwise before the last of its disconnect and exit handlers runs.
func Workers() []*Worker {
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	ws := make([]*Worker, 0, len(cluster.workers))
	for _, w := range cluster.workers {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *Worker) int { return a.id - b.id })
	return ws
}

// aliveWorkers returns every worker that has not exited, including those
// that left Workers() because they are being disconnected or killed.
func aliveWorkers() []*Worker {
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	ws := make([]*Worker, 0, len(cluster.alive))
	for w := range cluster.alive {
		ws = append(ws, w)
	}
	return ws
}

// Disconnect disconnects every worker (Node's cluster.disconnect) and returns
// once all of them have exited and the primary's shared sockets are closed,
// or with ctx's error when ctx ends first. The cluster can fork again
// afterwards. It returns ErrNotPrimary in a worker.
func Disconnect(ctx context.Context) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	ws := aliveWorkers() // also those that left Workers() on their way out
	for _, w := range ws {
		w.Disconnect()
	}
	for _, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	closeAllAddrs()
	return nil
}

// Primary-wide events, as Node's cluster events: each handler gets the worker
// the event is about. Handlers of all events run one at a time, in order, on
// a goroutine of the package; for one worker the order is always fork,
// online, listening..., then disconnect and exit. A worker's own handlers run
// before the primary-wide ones.

// OnFork adds a handler for the fork event, emitted once per Fork. It is the
// place to add a worker's own handlers without missing any of its events.
func OnFork(fn func(*Worker)) { cluster.onFork.add(fn) }

// OnOnline adds a handler for workers' online events.
func OnOnline(fn func(*Worker)) { cluster.onOnline.add(fn) }

// OnListening adds a handler for workers' listening events.
func OnListening(fn func(*Worker, Address)) { cluster.onListening.add(fn) }

// OnMessage adds a handler for messages from any worker.
func OnMessage(fn func(*Worker, Message)) { cluster.onMessage.add(fn) }

// OnDisconnect adds a handler for workers' disconnect events.
func OnDisconnect(fn func(*Worker)) { cluster.onDisconnect.add(fn) }

// OnExit adds a handler for workers' exit events.
func OnExit(fn func(*Worker, ExitStatus)) { cluster.onExit.add(fn) }

// OnSetup adds a handler for the setup event, emitted by SetupPrimary with
// the settings it set.
func OnSetup(fn func(Settings)) { cluster.onSetup.add(fn) }
