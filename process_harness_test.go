package clusternet

// The process-model tests (process_*_test.go): fork, the events and their
// order, ids, settings, stdio, messages and handles, disconnect and kill.
// This file has what they share: the workers' helpers that more than one
// file uses, and the event recorder. A worker that breaks the protocol is
// in hostile_unix_test.go.
//
// Workers never send anything before the primary asks (except where the
// recorder below is used), so that the handlers a test adds after Fork
// returns cannot miss a message.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// pmInfo is what the "pm-info" helper reports about the worker it runs in.
type pmInfo struct {
	ID, Pid           int
	State             string
	Connected, Dead   bool
	IsWorker          bool
	IsPrimary         bool
	SameProcess       bool              // Self().Process() is this process
	ForkNotPrimary    bool              // Fork returned ErrNotPrimary
	SetupNotPrimary   bool              // SetupPrimary returned ErrNotPrimary
	DisconnectNotPrim bool              // Disconnect(ctx) returned ErrNotPrimary
	PolicyNotPrimary  bool              // SetSchedulingPolicy returned ErrNotPrimary
	Cwd               string            // os.Getwd
	Env               map[string]string // the requested variables that are set
	Workers           int               // len(Workers()) in the worker
	ExitedAfterDiscon bool
}

// pmPayload is a value that both serializations carry; the "pm-typed"
// helper decodes it with its own Go type and sends it back, changed.
type pmPayload struct {
	Name  string
	N     int64
	U     uint8
	F     float64
	Tags  []string
	M     map[string]int
	B     []byte
	When  time.Time
	Inner *pmInner
}

type pmInner struct{ X, Y int }

func init() {
	// pm-info answers every message (a list of variable names) with pmInfo.
	helpers["pm-info"] = func() {
		self := Self()
		self.OnMessage(func(m Message) {
			var keys []string
			if err := m.Decode(&keys); err != nil {
				self.Send("decode error: " + err.Error())
				return
			}
			_, forkErr := Fork()
			cwd, _ := os.Getwd()
			info := pmInfo{
				ID:                self.ID(),
				Pid:               os.Getpid(),
				State:             self.State().String(),
				Connected:         self.IsConnected(),
				Dead:              self.IsDead(),
				IsWorker:          IsWorker(),
				IsPrimary:         IsPrimary(),
				SameProcess:       self.Process() != nil && self.Process().Pid == os.Getpid(),
				ForkNotPrimary:    errors.Is(forkErr, ErrNotPrimary),
				SetupNotPrimary:   errors.Is(SetupPrimary(Settings{}), ErrNotPrimary),
				DisconnectNotPrim: errors.Is(Disconnect(context.Background()), ErrNotPrimary),
				PolicyNotPrimary:  errors.Is(SetSchedulingPolicy(SchedNone), ErrNotPrimary),
				Cwd:               cwd,
				Env:               map[string]string{},
				Workers:           len(Workers()),
				ExitedAfterDiscon: self.ExitedAfterDisconnect(),
			}
			for _, k := range keys {
				if v, ok := os.LookupEnv(k); ok {
					info.Env[k] = v
				}
			}
			self.Send(info)
		})
		select {}
	}

	// pm-typed sends back every pmPayload it gets, changed, decoded with the
	// worker's own Go type whatever the serialization.
	helpers["pm-typed"] = func() {
		Self().OnMessage(func(m Message) {
			var p pmPayload
			if err := m.Decode(&p); err != nil {
				Self().Send(pmPayload{Name: "decode error: " + err.Error()})
				return
			}
			p.Name += " (worker)"
			p.N++
			p.Tags = append(p.Tags, "worker")
			Self().Send(p)
		})
		select {}
	}

	// pm-listen listens on a loopback port, then idles: its listening event
	// completes the event sequence.
	helpers["pm-listen"] = func() {
		if _, err := Listen("tcp", "127.0.0.1:0"); err != nil {
			fmt.Fprintln(os.Stderr, "pm-listen:", err)
			os.Exit(5)
		}
		select {}
	}

	// The examples' workers (example_test.go).
	helpers["pm-example-upper"] = func() {
		Self().OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			Self().Send(strings.ToUpper(s))
		})
		select {}
	}
	helpers["pm-example-sum"] = func() {
		Self().OnMessage(func(m Message) {
			var job struct{ Numbers []int }
			if err := m.Decode(&job); err != nil {
				Self().Send(map[string]string{"Error": err.Error()})
				return
			}
			sum := 0
			for _, n := range job.Numbers {
				sum += n
			}
			Self().Send(struct{ Count, Sum int }{len(job.Numbers), sum})
		})
		select {}
	}
}

// --- the event recorder ---------------------------------------------------

// pmEvent is one event handler call, as the recorder saw it. Names of the
// worker's own handlers start with "w:", the primary-wide ones do not.
type pmEvent struct {
	Name      string
	Detail    string // address, exit status or message text
	State     State
	Connected bool
	Dead      bool
	InWorkers bool // w was in Workers() when the handler ran
}

// pmLog records the events of the workers forked with pmFork. Primary-wide
// handlers cannot be removed and all tests share the process, so the
// recorder is installed once, and it leaves other tests' workers alone.
var pmLog struct {
	once    sync.Once
	forking sync.Mutex // held by pmFork while it forks and marks its worker
	mu      sync.Mutex
	changed chan struct{}
	mine    map[*Worker]bool
	events  map[*Worker][]pmEvent
}

// pmFork is fork with the worker's events recorded (see pmEvents).
func pmFork(t testing.TB, helper string, env ...string) *Worker {
	t.Helper()
	pmRecord()
	pmLog.forking.Lock()
	defer pmLog.forking.Unlock()
	w := fork(t, helper, env...)
	pmLog.mu.Lock()
	pmLog.mine[w] = true
	pmLog.mu.Unlock()
	return w
}

func pmRecord() {
	pmLog.once.Do(func() {
		pmLog.mu.Lock()
		pmLog.changed = make(chan struct{})
		pmLog.mine = make(map[*Worker]bool)
		pmLog.events = make(map[*Worker][]pmEvent)
		pmLog.mu.Unlock()
		// OnFork runs before any other event of the worker, so its own
		// handlers added here miss nothing. It may run before Fork has
		// returned in pmFork: pmFork holds forking until the worker is
		// marked as one to record.
		OnFork(func(w *Worker) {
			pmLog.forking.Lock()
			pmLog.forking.Unlock()
			if !pmMine(w) {
				return
			}
			pmAdd(w, "fork", "")
			w.OnOnline(func() { pmAdd(w, "w:online", "") })
			w.OnListening(func(a Address) { pmAdd(w, "w:listening", a.String()) })
			w.OnMessage(func(m Message) { pmAdd(w, "w:message", pmText(m)) })
			w.OnDisconnect(func() { pmAdd(w, "w:disconnect", "") })
			w.OnExit(func(s ExitStatus) { pmAdd(w, "w:exit", s.String()) })
			w.OnError(func(err error) { pmAdd(w, "w:error", err.Error()) })
		})
		OnOnline(func(w *Worker) { pmAddIfMine(w, "online", "") })
		OnListening(func(w *Worker, a Address) { pmAddIfMine(w, "listening", a.String()) })
		OnMessage(func(w *Worker, m Message) {
			if pmMine(w) {
				pmAdd(w, "message", pmText(m))
			}
		})
		OnDisconnect(func(w *Worker) { pmAddIfMine(w, "disconnect", "") })
		OnExit(func(w *Worker, s ExitStatus) { pmAddIfMine(w, "exit", s.String()) })
	})
}

func pmMine(w *Worker) bool {
	pmLog.mu.Lock()
	defer pmLog.mu.Unlock()
	return pmLog.mine[w]
}

func pmAddIfMine(w *Worker, name, detail string) {
	if pmMine(w) {
		pmAdd(w, name, detail)
	}
}

func pmText(m Message) string {
	if len(m.Raw()) > 256 {
		return fmt.Sprintf("<%d bytes>", len(m.Raw()))
	}
	var s string
	if m.codec == JSON && m.Decode(&s) == nil {
		return s
	}
	return string(m.Raw())
}

func pmAdd(w *Worker, name, detail string) {
	e := pmEvent{
		Name:      name,
		Detail:    detail,
		State:     w.State(),
		Connected: w.IsConnected(),
		Dead:      w.IsDead(),
		InWorkers: slices.Contains(Workers(), w),
	}
	pmLog.mu.Lock()
	pmLog.events[w] = append(pmLog.events[w], e)
	close(pmLog.changed)
	pmLog.changed = make(chan struct{})
	pmLog.mu.Unlock()
}

// pmEvents waits until done(events of w) and returns them.
func pmEvents(t testing.TB, w *Worker, what string, done func([]pmEvent) bool) []pmEvent {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		pmLog.mu.Lock()
		evs := slices.Clone(pmLog.events[w])
		changed := pmLog.changed
		pmLog.mu.Unlock()
		if done(evs) {
			return evs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("worker %d: timed out waiting for %s; events so far: %v", w.ID(), what, pmNames(evs))
		}
	}
}

// pmHas is a condition for pmEvents: every name has been recorded.
func pmHas(names ...string) func([]pmEvent) bool {
	return func(evs []pmEvent) bool {
		for _, n := range names {
			if pmFind(evs, n) < 0 {
				return false
			}
		}
		return true
	}
}

func pmFind(evs []pmEvent, name string) int {
	return slices.IndexFunc(evs, func(e pmEvent) bool { return e.Name == name })
}

func pmNames(evs []pmEvent) []string {
	names := make([]string, len(evs))
	for i, e := range evs {
		names[i] = e.Name
	}
	return names
}

// pmFinished waits until w's exit event has run and both its disconnect
// and exit events are recorded (they may come in either order), and
// returns its events.
func pmFinished(t testing.TB, w *Worker) []pmEvent {
	t.Helper()
	waitDone(t, w)
	evs := pmEvents(t, w, "the disconnect and exit events", pmHas("w:disconnect", "disconnect", "w:exit", "exit"))
	// A worker leaves Workers() before the last of its disconnect and exit
	// handlers runs (the primary-wide handler of the later event).
	last := evs[max(pmFind(evs, "disconnect"), pmFind(evs, "exit"))]
	if last.InWorkers {
		t.Errorf("worker %d still in Workers() in its last handler (%s)", w.ID(), last.Name)
	}
	return evs
}

// pmNoErrors fails t if w's error event ran: a worker that leaves
// normally, in whatever way, is no channel error.
func pmNoErrors(t testing.TB, w *Worker, evs []pmEvent) {
	t.Helper()
	for _, e := range evs {
		if e.Name == "w:error" {
			t.Errorf("worker %d: error event: %s", w.ID(), e.Detail)
		}
	}
}

// --- other helpers ----------------------------------------------------------

// pmReadAll reads r to EOF, within testTimeout.
func pmReadAll(t testing.TB, r io.Reader) string {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		ch <- result{b, err}
	}()
	res := recv(t, ch, "the worker's output")
	if res.err != nil {
		t.Errorf("reading the worker's output: %v", res.err)
	}
	return string(res.b)
}

// pmOnExit returns a channel that gets the status of w's exit event; call
// it before the event can have run.
func pmOnExit(w *Worker) <-chan ExitStatus {
	status := make(chan ExitStatus, 1)
	w.OnExit(func(s ExitStatus) { status <- s })
	return status
}
