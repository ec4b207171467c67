package clusternet

// Tests of the process model: fork, the events and their order, ids,
// settings, stdio, messages and handles, disconnect and kill. Platform
// specific parts (signals, descriptors, primary death) are in
// process_unix_test.go; a worker that breaks the protocol is in
// hostile_unix_test.go.
//
// Every worker runs one of the helpers registered in init below. Workers
// never send anything before the primary asks (except where the recorder
// below is used), so that the handlers a test adds after Fork returns
// cannot miss a message.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

// pmBig is the 1 MiB message.
type pmBig struct {
	Data []byte
	Sum  string
}

// pmHandleReport is what "pm-handleinfo" says about a message's handle.
type pmHandleReport struct {
	FirstErr      string // the first Conn (or File, for files): "" when it worked
	SecondInvalid bool   // the second take failed with ErrInvalidHandle
	FileAfterNil  bool   // File after the take returned nil
	HasAfter      bool   // HasHandle after the take
	WrongKind     bool   // Listener() on a connection failed with ErrInvalidHandle
	NoneInvalid   bool   // a message without a handle: Conn fails with ErrInvalidHandle
}

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

	// pm-hello sends a greeting of its own accord, then acknowledges every
	// message it gets. Tests use the event recorder to see the greeting.
	helpers["pm-hello"] = func() {
		Self().OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			Self().Send("ack: " + s)
		})
		Self().Send(fmt.Sprintf("hello from worker %d", Self().ID()))
		select {}
	}

	helpers["pm-exit42"] = func() { os.Exit(42) }

	// pm-listen listens on a loopback port, then idles: its listening event
	// completes the event sequence.
	helpers["pm-listen"] = func() {
		if _, err := Listen("tcp", "127.0.0.1:0"); err != nil {
			fmt.Fprintln(os.Stderr, "pm-listen:", err)
			os.Exit(5)
		}
		select {}
	}

	// pm-selfdisconnect disconnects itself and says so on stdout (Silent)
	// from its own disconnect handler.
	helpers["pm-selfdisconnect"] = func() {
		Self().OnDisconnect(func() { fmt.Println("worker: disconnect handler ran") })
		if err := Self().Disconnect(); err != nil {
			fmt.Println("worker: Disconnect:", err)
			os.Exit(6)
		}
		select {}
	}

	// pm-selfkill leaves with Self().Kill(nil).
	helpers["pm-selfkill"] = func() {
		err := Self().Kill(nil)
		fmt.Fprintln(os.Stderr, "pm-selfkill: Kill returned", err)
		os.Exit(7)
	}

	// pm-print writes to its stdout and stderr and reports how much stdin
	// it read; with Silent, stdin is empty.
	helpers["pm-print"] = func() {
		in, err := io.ReadAll(os.Stdin)
		fmt.Printf("out: %d bytes of stdin, err %v\n", len(in), err)
		fmt.Fprintln(os.Stderr, "err: to stderr")
	}

	// pm-bighandle answers a pmBig that comes with a file: it writes what
	// it received into the file and sends the data back with the file.
	helpers["pm-bighandle"] = func() {
		Self().OnMessage(func(m Message) {
			var b pmBig
			if err := m.Decode(&b); err != nil {
				Self().Send(pmBig{Sum: "decode error: " + err.Error()})
				return
			}
			f := m.File()
			if f == nil {
				Self().Send(pmBig{Sum: "no handle"})
				return
			}
			sum := sha256.Sum256(b.Data)
			fmt.Fprintf(f, "worker got %d bytes %s\n", len(b.Data), hex.EncodeToString(sum[:]))
			if err := Self().Send(pmBig{Data: b.Data, Sum: hex.EncodeToString(sum[:])}, WithHandle(f)); err != nil {
				Self().Send(pmBig{Sum: "send error: " + err.Error()})
			}
			f.Close()
		})
		select {}
	}

	// pm-handleinfo takes the handle of every message and reports on it; a
	// connection gets a greeting written to it first.
	helpers["pm-handleinfo"] = func() {
		Self().OnMessage(func(m Message) {
			var kind string
			m.Decode(&kind)
			var r pmHandleReport
			switch kind {
			case "conn":
				_, werr := m.Listener()
				r.WrongKind = errors.Is(werr, ErrInvalidHandle)
				c, err := m.Conn()
				if err != nil {
					r.FirstErr = err.Error()
				} else {
					io.WriteString(c, "hello over the handed connection")
					c.Close()
				}
				_, err = m.Conn()
				r.SecondInvalid = errors.Is(err, ErrInvalidHandle)
			case "file":
				_, werr := m.Conn()
				r.WrongKind = errors.Is(werr, ErrInvalidHandle)
				f := m.File()
				if f == nil {
					r.FirstErr = "File returned nil"
				} else {
					io.WriteString(f, "hello through the handed file")
					f.Close()
				}
				_, err := m.Conn()
				r.SecondInvalid = errors.Is(err, ErrInvalidHandle)
			case "none":
				_, err := m.Conn()
				r.NoneInvalid = errors.Is(err, ErrInvalidHandle)
			}
			r.FileAfterNil = m.File() == nil
			r.HasAfter = m.HasHandle()
			Self().Send(r)
		})
		select {}
	}

	// pm-maxsize tries to send a message of the size it is asked for and
	// reports the error.
	helpers["pm-maxsize"] = func() {
		Self().OnMessage(func(m Message) {
			var n int
			m.Decode(&n)
			err := Self().Send(strings.Repeat("x", n))
			if err != nil {
				Self().Send("error: " + err.Error())
			}
		})
		select {}
	}

	// pm-nochannel runs with CLUSTERNET_WORKER_ID set by hand and no
	// channel; it prints what the package tells it, as JSON, on stdout.
	helpers["pm-nochannel"] = func() {
		self := Self()
		r := pmNoChannel{IsWorker: IsWorker(), HasSelf: self != nil}
		if self != nil {
			err := self.Send("anyone there?")
			r.SendErr = fmt.Sprint(err)
			r.SendNoChannel = errors.Is(err, ErrNoChannel)
			r.DisconnectNoChannel = errors.Is(self.Disconnect(), ErrNoChannel)
			r.KillNoChannel = errors.Is(self.Kill(nil), ErrNoChannel)
			_, err = Listen("tcp", "127.0.0.1:0")
			r.ListenNoChannel = errors.Is(err, ErrNoChannel)
			r.Connected = self.IsConnected()
			_, r.EnvLeft = os.LookupEnv(envWorkerID)
		}
		json.NewEncoder(os.Stdout).Encode(r)
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

type pmNoChannel struct {
	IsWorker, HasSelf   bool
	SendErr             string
	SendNoChannel       bool
	DisconnectNoChannel bool
	KillNoChannel       bool
	ListenNoChannel     bool
	Connected           bool
	EnvLeft             bool
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

// pmInbox collects the messages of w from now on.
func pmInbox(w *Worker) <-chan Message {
	ch := make(chan Message, 1024)
	w.OnMessage(func(m Message) {
		select {
		case ch <- m:
		default:
		}
	})
	return ch
}

// pmAsk sends req to w and decodes the next message from in into reply.
func pmAsk(t testing.TB, w *Worker, in <-chan Message, req, reply any) {
	t.Helper()
	if err := w.Send(req); err != nil {
		t.Fatalf("Send(%v): %v", req, err)
	}
	m := recv(t, in, "the worker's reply")
	if err := m.Decode(reply); err != nil {
		t.Fatalf("Decode %q: %v", m.Raw(), err)
	}
}

// pmRoundTrip checks that an "echo" worker still answers.
func pmRoundTrip(t testing.TB, w *Worker, in <-chan Message, text string) {
	t.Helper()
	var got string
	pmAsk(t, w, in, text, &got)
	if got != text {
		t.Fatalf("echo of %q = %q", text, got)
	}
}

// pmSetup replaces the primary's settings for one test and puts the old
// ones back at cleanup.
func pmSetup(t testing.TB, s Settings) {
	t.Helper()
	old := CurrentSettings()
	if err := SetupPrimary(s); err != nil {
		t.Fatalf("SetupPrimary: %v", err)
	}
	t.Cleanup(func() {
		if err := SetupPrimary(old); err != nil {
			t.Errorf("restoring the settings: %v", err)
		}
	})
}

// pmMarks makes markers unique across tests and repeated runs (-count).
var pmMarks atomic.Int64

func pmMark(t testing.TB) string {
	return fmt.Sprintf("%s#%d", t.Name(), pmMarks.Add(1))
}

// --- tests ------------------------------------------------------------------

func TestProcessSelfIsNilInPrimary(t *testing.T) {
	if Self() != nil {
		t.Errorf("Self() = %v in the primary, want nil", Self())
	}
	if !IsPrimary() || IsWorker() {
		t.Errorf("IsPrimary() = %v, IsWorker() = %v in the primary", IsPrimary(), IsWorker())
	}
}

// Ids are 1, 2, 3... in fork order, and the worker sees its own.
func TestProcessIDs(t *testing.T) {
	a := fork(t, "pm-info")
	b := fork(t, "pm-info")
	if a.ID() < 1 {
		t.Errorf("first id = %d, want >= 1", a.ID())
	}
	if b.ID() != a.ID()+1 {
		t.Errorf("ids in fork order: %d then %d, want consecutive", a.ID(), b.ID())
	}
	for _, w := range []*Worker{a, b} {
		var info pmInfo
		pmAsk(t, w, pmInbox(w), []string{}, &info)
		if info.ID != w.ID() {
			t.Errorf("worker %d reports Self().ID() = %d", w.ID(), info.ID)
		}
		if info.Pid != w.Process().Pid {
			t.Errorf("worker %d: Process().Pid = %d, the worker's pid is %d", w.ID(), w.Process().Pid, info.Pid)
		}
	}
}

// For one worker the events come in Node's order: fork, online,
// listening, then disconnect and exit (either order); a worker's own
// handlers run before the primary-wide ones.
func TestProcessEventOrder(t *testing.T) {
	w := pmFork(t, "pm-listen")
	evs := pmEvents(t, w, "the listening event", pmHas("listening"))
	i := pmFind(evs, "w:listening")
	if addr := evs[i].Detail; !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Errorf("listening at %q, want 127.0.0.1 and a port", addr)
	}
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	evs = pmFinished(t, w)
	pmNoErrors(t, w, evs)
	names := pmNames(evs)
	head := []string{"fork", "w:online", "online", "w:listening", "listening"}
	tail1 := []string{"w:disconnect", "disconnect", "w:exit", "exit"}
	tail2 := []string{"w:exit", "exit", "w:disconnect", "disconnect"}
	if !slices.Equal(names, slices.Concat(head, tail1)) && !slices.Equal(names, slices.Concat(head, tail2)) {
		t.Errorf("events = %v, want %v then %v or %v; all: %+v", names, head, tail1, tail2, evs)
	}
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q after Disconnect, want exit code 0", st)
	}
}

// State, IsConnected and IsDead follow the events: none at fork, online,
// listening, disconnected, dead.
func TestProcessStateTransitions(t *testing.T) {
	w := pmFork(t, "pm-listen")
	if !w.IsConnected() || w.IsDead() {
		t.Errorf("after Fork: IsConnected() = %v, IsDead() = %v", w.IsConnected(), w.IsDead())
	}
	pmEvents(t, w, "the listening event", pmHas("listening"))
	if s := w.State(); s != StateListening {
		t.Errorf("State() after the listening event = %v", s)
	}
	w.Disconnect()
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	want := map[string]State{
		"fork": StateNone, "w:online": StateOnline, "online": StateOnline,
		"w:listening": StateListening, "listening": StateListening,
		"w:disconnect": StateDisconnected, "disconnect": StateDisconnected,
		"w:exit": StateDead, "exit": StateDead,
	}
	for _, e := range evs {
		if s, ok := want[e.Name]; ok && e.State != s {
			// Disconnected and Dead may come in either order; Dead is final.
			if !(e.State == StateDead && s == StateDisconnected && pmFind(evs, "exit") < pmFind(evs, "disconnect")) {
				t.Errorf("State() in the %s handler = %v, want %v", e.Name, e.State, s)
			}
		}
		switch e.Name {
		case "fork", "w:online", "online", "w:listening", "listening":
			if !e.Connected || e.Dead {
				t.Errorf("%s: IsConnected() = %v, IsDead() = %v", e.Name, e.Connected, e.Dead)
			}
		case "w:disconnect", "disconnect":
			if e.Connected {
				t.Errorf("%s: IsConnected() = true", e.Name)
			}
		case "w:exit", "exit":
			if e.Connected || !e.Dead {
				t.Errorf("%s: IsConnected() = %v, IsDead() = %v", e.Name, e.Connected, e.Dead)
			}
		}
	}
	if w.State() != StateDead || !w.IsDead() || w.IsConnected() {
		t.Errorf("after exit: State() = %v, IsDead() = %v, IsConnected() = %v", w.State(), w.IsDead(), w.IsConnected())
	}
	for s, name := range map[State]string{StateNone: "none", StateOnline: "online", StateListening: "listening", StateDisconnected: "disconnected", StateDead: "dead"} {
		if s.String() != name {
			t.Errorf("State(%d).String() = %q, want %q", int(s), s.String(), name)
		}
	}
}

// The worker's own view: it is a worker, Self() is itself, and the
// primary-only calls fail with ErrNotPrimary.
func TestProcessSelfInWorker(t *testing.T) {
	w := fork(t, "pm-info")
	var info pmInfo
	pmAsk(t, w, pmInbox(w), []string{envWorkerID, envChannel, envSerialization, envMaxMessage}, &info)
	if !info.IsWorker || info.IsPrimary {
		t.Errorf("in the worker IsWorker() = %v, IsPrimary() = %v", info.IsWorker, info.IsPrimary)
	}
	if info.ID != w.ID() || !info.SameProcess {
		t.Errorf("Self() in the worker: ID %d (want %d), Process() is the worker: %v", info.ID, w.ID(), info.SameProcess)
	}
	if !info.ForkNotPrimary || !info.SetupNotPrimary || !info.DisconnectNotPrim || !info.PolicyNotPrimary {
		t.Errorf("primary-only calls in a worker: Fork %v, SetupPrimary %v, Disconnect %v, SetSchedulingPolicy %v; want ErrNotPrimary for all",
			info.ForkNotPrimary, info.SetupNotPrimary, info.DisconnectNotPrim, info.PolicyNotPrimary)
	}
	if info.State != "online" || !info.Connected || info.Dead || info.ExitedAfterDiscon {
		t.Errorf("Self(): State %s, IsConnected %v, IsDead %v, ExitedAfterDisconnect %v", info.State, info.Connected, info.Dead, info.ExitedAfterDiscon)
	}
	if info.Workers != 0 {
		t.Errorf("Workers() in a worker has %d entries", info.Workers)
	}
	if len(info.Env) != 0 {
		t.Errorf("the worker's environment still has %v; the package must remove its variables", info.Env)
	}
}

// Fork(env) adds to and overrides the primary's environment and
// Settings.Env.
func TestProcessForkEnv(t *testing.T) {
	t.Setenv("PM_INHERITED", "from the primary")
	t.Setenv("PM_OVERRIDDEN", "from the primary")
	pmSetup(t, Settings{Env: []string{"PM_SETTINGS=settings", "PM_BOTH=settings", "PM_OVERRIDDEN=settings"}})
	w := fork(t, "pm-info", "PM_BOTH=fork", "PM_FORK=fork", "PM_EMPTY=")
	var info pmInfo
	keys := []string{"PM_INHERITED", "PM_OVERRIDDEN", "PM_SETTINGS", "PM_BOTH", "PM_FORK", "PM_EMPTY", "PM_UNSET"}
	pmAsk(t, w, pmInbox(w), keys, &info)
	want := map[string]string{
		"PM_INHERITED":  "from the primary",
		"PM_OVERRIDDEN": "settings",
		"PM_SETTINGS":   "settings",
		"PM_BOTH":       "fork",
		"PM_FORK":       "fork",
		"PM_EMPTY":      "",
	}
	if diff := cmp.Diff(want, info.Env); diff != "" {
		t.Errorf("worker environment (-want +got):\n%s", diff)
	}

	for _, bad := range []string{"NOEQUALS", "=value"} {
		before := Workers()
		if w, err := Fork(bad); err == nil {
			reap(t, w)
			t.Errorf("Fork(%q) succeeded", bad)
		} else if got := Workers(); !slices.Equal(got, before) {
			t.Errorf("Fork(%q) failed but Workers() changed", bad)
		}
	}
}

// Settings.Dir is the worker's working directory (Node's cwd).
func TestProcessDir(t *testing.T) {
	dir := testTempDir(t)
	pmSetup(t, Settings{Dir: dir})
	w := fork(t, "pm-info")
	var info pmInfo
	pmAsk(t, w, pmInbox(w), []string{}, &info)
	want, _ := filepath.EvalSymlinks(dir)
	got, _ := filepath.EvalSymlinks(info.Cwd)
	if got != want || got == "" {
		t.Errorf("worker cwd = %q, want %q", info.Cwd, dir)
	}
}

// A bad Dir or Exec makes Fork fail with the start error, and no worker.
func TestProcessForkStartError(t *testing.T) {
	for _, s := range []Settings{
		{Dir: filepath.Join(testTempDir(t), "missing")},
		{Exec: filepath.Join(testTempDir(t), "no-such-program")},
	} {
		pmSetup(t, s)
		before := Workers()
		w, err := Fork(envHelper + "=idle")
		if err == nil {
			reap(t, w)
			t.Errorf("Fork with %+v succeeded", s)
			continue
		}
		if s.Exec != "" && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Fork with Exec %q: %v, want an error that is os.ErrNotExist", s.Exec, err)
		}
		if !slices.Equal(Workers(), before) {
			t.Errorf("a failed Fork changed Workers()")
		}
	}
}

// Silent sends the worker's output to Worker.Stdout/Stderr and gives it an
// empty stdin; without Silent, Stdout and Stderr are nil.
func TestProcessSilent(t *testing.T) {
	plain := fork(t, "idle")
	if plain.Stdout() != nil || plain.Stderr() != nil {
		t.Errorf("a worker forked without Silent has Stdout() %v, Stderr() %v; want nil", plain.Stdout(), plain.Stderr())
	}
	pmSetup(t, Settings{Silent: true})
	w := fork(t, "pm-print")
	if w.Stdout() == nil || w.Stderr() == nil {
		t.Fatal("Silent worker has no Stdout() or Stderr()")
	}
	out := pmReadAll(t, w.Stdout())
	errText := pmReadAll(t, w.Stderr())
	waitDone(t, w)
	if out != "out: 0 bytes of stdin, err <nil>\n" {
		t.Errorf("worker stdout = %q", out)
	}
	if errText != "err: to stderr\n" {
		t.Errorf("worker stderr = %q", errText)
	}
}

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

// Messages go both ways, in order, and reach the worker's own handlers
// and the primary-wide ones, the worker's first.
func TestProcessMessagesBothWays(t *testing.T) {
	w := fork(t, "echo")
	var mine atomic.Pointer[Worker]
	mine.Store(w)
	type seen struct {
		who string
		v   float64
	}
	got := make(chan seen, 1024)
	w.OnMessage(func(m Message) {
		var v float64
		m.Decode(&v)
		got <- seen{"worker handler", v}
	})
	OnMessage(func(from *Worker, m Message) {
		if from != mine.Load() {
			return
		}
		var v float64
		m.Decode(&v)
		select {
		case got <- seen{"primary-wide handler", v}:
		default:
		}
	})
	const n = 200
	for i := range n {
		if err := w.Send(i); err != nil {
			t.Fatalf("Send(%d): %v", i, err)
		}
	}
	for i := range n {
		for _, who := range []string{"worker handler", "primary-wide handler"} {
			s := recv(t, got, "an echo")
			if s.who != who || s.v != float64(i) {
				t.Fatalf("message %d: got %v from the %s, want %d from the %s", i, s.v, s.who, i, who)
			}
		}
	}

	// A structured value and a string with every kind of character.
	in := pmInbox(w)
	var back map[string]any
	pmAsk(t, w, in, map[string]any{"text": "<&> \"quoted\" ünïcode \u2028", "list": []any{1.5, "two", nil, true}}, &back)
	want := map[string]any{"text": "<&> \"quoted\" ünïcode \u2028", "list": []any{1.5, "two", nil, true}}
	if diff := cmp.Diff(want, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// What the primary sends right after Fork reaches the worker's handlers,
// in order, though they are added only once the worker's main runs.
func TestProcessEarlyMessages(t *testing.T) {
	for range 3 {
		w := fork(t, "echo")
		in := pmInbox(w)
		for i := range 5 {
			if err := w.Send(i); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 5 {
			var got int
			m := recv(t, in, "an echo of an early message")
			if err := m.Decode(&got); err != nil || got != i {
				t.Fatalf("echo %d: %s (%v)", i, m.Raw(), err)
			}
		}
	}
}

// A worker that never adds a message handler keeps working however many
// messages it is sent: it still leaves gracefully when disconnected.
func TestProcessMessagesToDeafWorker(t *testing.T) {
	w := pmFork(t, "idle")
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 3000 {
		var opts []SendOption
		if i%10 == 0 {
			opts = append(opts, WithHandle(f))
		}
		if err := w.Send(i, opts...); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	w.Disconnect()
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q after Disconnect, want exit code 0", st)
	}
}

// A worker may speak first, and hears the primary's answer.
func TestProcessWorkerSpeaksFirst(t *testing.T) {
	w := pmFork(t, "pm-hello")
	greeting := fmt.Sprintf("hello from worker %d", w.ID())
	evs := pmEvents(t, w, "the greeting", func(evs []pmEvent) bool {
		return slices.ContainsFunc(evs, func(e pmEvent) bool { return e.Name == "message" && e.Detail == greeting })
	})
	if i, j := pmFind(evs, "online"), pmFind(evs, "w:message"); i < 0 || j < i {
		t.Errorf("events %v: the online event must come before the first message", pmNames(evs))
	}
	if err := w.Send("welcome"); err != nil {
		t.Fatal(err)
	}
	pmEvents(t, w, "the acknowledgement", func(evs []pmEvent) bool {
		return slices.ContainsFunc(evs, func(e pmEvent) bool { return e.Name == "message" && e.Detail == "ack: welcome" })
	})
}

// Serialization: JSON by default, Gob on request; both carry values of
// the worker's own types. SetupPrimary affects later forks only and emits
// the setup event.
func TestProcessSerialization(t *testing.T) {
	jsonWorker := fork(t, "pm-typed")

	mark := pmMark(t)
	setups := make(chan Settings, 4)
	OnSetup(func(s Settings) {
		if slices.Contains(s.Env, "PM_MARK="+mark) {
			select {
			case setups <- s:
			default:
			}
		}
	})
	pmSetup(t, Settings{Serialization: Gob, Env: []string{"PM_MARK=" + mark}})
	s := recv(t, setups, "the setup event")
	if s.Serialization != Gob || s.Exec == "" || s.MaxMessageSize != DefaultMaxMessageSize {
		t.Errorf("setup event settings: Serialization %v, Exec %q, MaxMessageSize %d; want gob and the defaults filled in", s.Serialization, s.Exec, s.MaxMessageSize)
	}
	if got := CurrentSettings().Serialization; got != Gob {
		t.Errorf("CurrentSettings().Serialization = %v after SetupPrimary", got)
	}
	gobWorker := fork(t, "pm-typed")

	sent := pmPayload{
		Name:  "payload",
		N:     1<<62 + 1, // more than a float64 holds exactly
		U:     200,
		F:     -0.125,
		Tags:  []string{"a", "b"},
		M:     map[string]int{"one": 1, "two": 2},
		B:     []byte{0, 1, 2, 0xff},
		When:  time.Date(2024, 2, 29, 12, 30, 0, 123456789, time.UTC),
		Inner: &pmInner{X: 3, Y: -4},
	}
	want := sent
	want.Name, want.N, want.Tags = "payload (worker)", sent.N+1, []string{"a", "b", "worker"}
	for _, tc := range []struct {
		w     *Worker
		codec Serialization
	}{{jsonWorker, JSON}, {gobWorker, Gob}} {
		in := pmInbox(tc.w)
		if err := tc.w.Send(sent); err != nil {
			t.Fatalf("%v: Send: %v", tc.codec, err)
		}
		m := recv(t, in, "the reply")
		var got pmPayload
		if err := m.Decode(&got); err != nil {
			t.Fatalf("%v: Decode: %v", tc.codec, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%v round trip (-want +got):\n%s", tc.codec, diff)
		}
		if isJSON := json.Valid(m.Raw()); isJSON != (tc.codec == JSON) {
			t.Errorf("worker forked with %v: the message is JSON: %v; the serialization must be the one at fork time", tc.codec, isJSON)
		}
	}

	if err := SetupPrimary(Settings{Serialization: Serialization(7)}); err == nil {
		t.Errorf("SetupPrimary with an unknown serialization succeeded")
	}
	if got := CurrentSettings().Serialization; got != Gob {
		t.Errorf("a refused SetupPrimary changed the settings: Serialization %v", got)
	}
}

// CurrentSettings has the defaults filled in; a refused SetupPrimary
// changes nothing.
func TestProcessCurrentSettingsDefaults(t *testing.T) {
	pmSetup(t, Settings{})
	s := CurrentSettings()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if s.Exec != exe {
		t.Errorf("default Exec = %q, want os.Executable() %q", s.Exec, exe)
	}
	if !slices.Equal(s.Args, os.Args[1:]) || s.Args == nil {
		t.Errorf("default Args = %q, want os.Args[1:] %q", s.Args, os.Args[1:])
	}
	if s.Serialization != JSON || s.MaxMessageSize != DefaultMaxMessageSize || s.Dir != "" || s.Silent || s.Env != nil {
		t.Errorf("defaults: Serialization %v, MaxMessageSize %d, Dir %q, Silent %v, Env %q", s.Serialization, s.MaxMessageSize, s.Dir, s.Silent, s.Env)
	}
	if err := SetupPrimary(Settings{Env: []string{"NOT A KEY VALUE"}, Dir: "/changed"}); err == nil {
		t.Errorf("SetupPrimary with a malformed Env entry succeeded")
	}
	if got := CurrentSettings().Dir; got != "" {
		t.Errorf("a refused SetupPrimary changed Dir to %q", got)
	}
}

// Workers() lists the live workers by id; a worker disconnected or killed
// from the primary leaves it at once.
func TestProcessWorkersList(t *testing.T) {
	var ws []*Worker
	for range 3 {
		ws = append(ws, fork(t, "idle"))
	}
	list := Workers()
	if !slices.IsSortedFunc(list, func(a, b *Worker) int { return a.ID() - b.ID() }) {
		t.Errorf("Workers() is not sorted by id: %v", pmIDs(list))
	}
	var mine []*Worker
	for _, w := range list {
		if slices.Contains(ws, w) {
			mine = append(mine, w)
		}
	}
	if !slices.Equal(mine, ws) {
		t.Errorf("Workers() has %v of the workers forked, %v, want all in fork order", pmIDs(mine), pmIDs(ws))
	}
	ws[1].Kill(os.Kill)
	if slices.Contains(Workers(), ws[1]) {
		t.Errorf("worker %d still in Workers() after Kill", ws[1].ID())
	}
	ws[2].Disconnect()
	if slices.Contains(Workers(), ws[2]) {
		t.Errorf("worker %d still in Workers() after Disconnect", ws[2].ID())
	}
	if !slices.Contains(Workers(), ws[0]) {
		t.Errorf("worker %d left Workers() though it runs", ws[0].ID())
	}
	waitDone(t, ws[1])
	waitDone(t, ws[2])
	if !slices.Contains(Workers(), ws[0]) {
		t.Errorf("worker %d left Workers() though it runs", ws[0].ID())
	}
}

func pmIDs(ws []*Worker) []int {
	ids := make([]int, len(ws))
	for i, w := range ws {
		ids[i] = w.ID()
	}
	return ids
}

// A worker that exits by itself leaves Workers() before the last of its
// disconnect and exit handlers runs, and its exit code is reported.
func TestProcessExitCode(t *testing.T) {
	w := pmFork(t, "pm-exit42")
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	for _, name := range []string{"w:exit", "exit"} {
		e := evs[pmFind(evs, name)]
		if e.Detail != "exit code 42" {
			t.Errorf("%s handler got %q, want exit code 42", name, e.Detail)
		}
		if e.InWorkers {
			t.Errorf("worker still in Workers() in its %s handler", name)
		}
	}
	if w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = true for a worker that exited by itself")
	}
	if !w.IsDead() || w.State() != StateDead {
		t.Errorf("after exit: IsDead() = %v, State() = %v", w.IsDead(), w.State())
	}
	if err := w.Kill(os.Kill); err != nil {
		t.Errorf("Kill after exit: %v, want nil", err)
	}
}

// pmOnExit returns a channel that gets the status of w's exit event; call
// it before the event can have run.
func pmOnExit(w *Worker) <-chan ExitStatus {
	status := make(chan ExitStatus, 1)
	w.OnExit(func(s ExitStatus) { status <- s })
	return status
}

// Disconnecting an idle worker: it exits with code 0, and
// ExitedAfterDisconnect is true.
func TestProcessDisconnectIdle(t *testing.T) {
	w := pmFork(t, "idle")
	pmEvents(t, w, "the online event", pmHas("online"))
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false right after Disconnect")
	}
	if err := w.Disconnect(); err != nil {
		t.Errorf("second Disconnect: %v", err)
	}
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q, want exit code 0", st)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false after a disconnect")
	}
}

// Disconnect(ctx) disconnects every worker and waits for them; the
// cluster can fork again afterwards.
func TestProcessDisconnectCluster(t *testing.T) {
	ws := []*Worker{pmFork(t, "idle"), pmFork(t, "echo"), pmFork(t, "pm-listen")}
	pmEvents(t, ws[2], "the listening event", pmHas("listening"))
	if err := Disconnect(testContext(t)); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	for _, w := range ws {
		select {
		case <-w.Done():
		default:
			t.Errorf("worker %d has not exited when Disconnect returned", w.ID())
			continue
		}
		evs := pmFinished(t, w)
		pmNoErrors(t, w, evs)
		if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" || !w.ExitedAfterDisconnect() {
			t.Errorf("worker %d: %s, ExitedAfterDisconnect() = %v; want exit code 0 and true", w.ID(), st, w.ExitedAfterDisconnect())
		}
		if slices.Contains(Workers(), w) {
			t.Errorf("worker %d still in Workers()", w.ID())
		}
	}

	again := pmFork(t, "echo")
	if again.ID() <= ws[2].ID() {
		t.Errorf("id after Disconnect = %d, want more than %d", again.ID(), ws[2].ID())
	}
	pmRoundTrip(t, again, pmInbox(again), "after the cluster disconnected")
}

// A worker that calls Self().Disconnect() runs its own disconnect handlers
// and exits with code 0, ExitedAfterDisconnect true.
func TestProcessSelfDisconnect(t *testing.T) {
	pmSetup(t, Settings{Silent: true})
	w := pmFork(t, "pm-selfdisconnect")
	out := pmReadAll(t, w.Stdout())
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q, want exit code 0", st)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false after Self().Disconnect()")
	}
	if out != "worker: disconnect handler ran\n" {
		t.Errorf("worker stdout = %q, want its disconnect handler's line", out)
	}
}

// Self().Kill(nil) in a worker: exit code 0 and ExitedAfterDisconnect.
func TestProcessSelfKill(t *testing.T) {
	w := pmFork(t, "pm-selfkill")
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q, want exit code 0", st)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false after Self().Kill(nil)")
	}
}

// Send fails with ErrChannelClosed once the worker is gone, and leaves the
// handle open.
func TestProcessSendAfterClose(t *testing.T) {
	w := fork(t, "idle")
	w.Kill(os.Kill)
	waitDone(t, w)
	if err := w.Send("anyone?"); !errors.Is(err, ErrChannelClosed) {
		t.Errorf("Send after exit = %v, want ErrChannelClosed", err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := w.Send("anyone?", WithHandle(f)); !errors.Is(err, ErrChannelClosed) {
		t.Errorf("Send with a handle after exit = %v, want ErrChannelClosed", err)
	}
	if _, err := f.Stat(); err != nil {
		t.Errorf("the handle of a failed Send was closed: %v", err)
	}
}

// Handles that cannot be sent are refused with ErrInvalidHandle; the
// channel stays usable.
func TestProcessInvalidHandle(t *testing.T) {
	w := fork(t, "echo")
	in := pmInbox(w)
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	c1, c2 := net.Pipe() // no descriptor behind it
	defer c1.Close()
	defer c2.Close()
	for _, h := range []any{42, "a string", c1, closed, (*os.File)(nil), &bytes.Buffer{}} {
		if err := w.Send("with a bad handle", WithHandle(h)); !errors.Is(err, ErrInvalidHandle) {
			t.Errorf("Send(WithHandle(%T)) = %v, want ErrInvalidHandle", h, err)
		}
	}
	if err := w.Send(make(chan int)); err == nil || errors.Is(err, ErrChannelClosed) {
		t.Errorf("Send of a value JSON cannot encode = %v, want an encoding error", err)
	}
	pmRoundTrip(t, w, in, "still fine")
}

// A message's handle is taken once, by the kind it is; Message without a
// handle has none to take. Checked on the worker's side for a connection
// and a file sent by the primary, and on the primary's side for a file
// sent by the worker.
func TestProcessHandleTakenOnce(t *testing.T) {
	w := fork(t, "pm-handleinfo")
	in := pmInbox(w)

	// A connection: the worker writes to it, then closes it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var r pmHandleReport
	if err := w.Send("conn", WithHandle(server)); err != nil {
		t.Fatal(err)
	}
	m := recv(t, in, "the worker's report")
	if err := m.Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r != (pmHandleReport{SecondInvalid: true, FileAfterNil: true, WrongKind: true}) {
		t.Errorf("connection handle, worker's report: %+v", r)
	}
	client.SetReadDeadline(time.Now().Add(testTimeout))
	got, err := io.ReadAll(client)
	if string(got) != "hello over the handed connection" || err != nil {
		t.Errorf("read from the handed connection: %q, %v", got, err)
	}

	// A file.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if err := w.Send("file", WithHandle(pw)); err != nil {
		t.Fatal(err)
	}
	pw.Close() // files stay open on the sender's side: close ours
	m = recv(t, in, "the worker's report")
	r = pmHandleReport{}
	if err := m.Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r != (pmHandleReport{SecondInvalid: true, FileAfterNil: true, WrongKind: true}) {
		t.Errorf("file handle, worker's report: %+v", r)
	}
	if got := pmReadAll(t, pr); got != "hello through the handed file" {
		t.Errorf("read from the handed file: %q", got)
	}

	// No handle.
	if err := w.Send("none"); err != nil {
		t.Fatal(err)
	}
	m = recv(t, in, "the worker's report")
	r = pmHandleReport{}
	m.Decode(&r)
	if r != (pmHandleReport{NoneInvalid: true, FileAfterNil: true}) {
		t.Errorf("no handle, worker's report: %+v", r)
	}
	if m.HasHandle() || m.File() != nil {
		t.Errorf("a message without a handle: HasHandle() = %v, File() = non-nil", m.HasHandle())
	}
	if _, err := m.Conn(); !errors.Is(err, ErrInvalidHandle) {
		t.Errorf("Conn() of a message without a handle = %v, want ErrInvalidHandle", err)
	}
}

// Both sides of a message with a handle: the first handler to take it
// gets it, every other handler sees it taken.
func TestProcessHandleTakenOnceAcrossHandlers(t *testing.T) {
	w := fork(t, "pm-bighandle")
	var mine atomic.Pointer[Worker]
	mine.Store(w)
	type took struct {
		who  string
		file *os.File
		has  bool
	}
	tooks := make(chan took, 4)
	w.OnMessage(func(m Message) {
		has := m.HasHandle()
		tooks <- took{"worker", m.File(), has}
	})
	OnMessage(func(from *Worker, m Message) {
		if from != mine.Load() {
			return
		}
		has := m.HasHandle()
		select {
		case tooks <- took{"primary-wide", m.File(), has}:
		default:
		}
	})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	err = w.Send(pmBig{Data: []byte("small")}, WithHandle(pw))
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	first := recv(t, tooks, "the worker's handler")
	second := recv(t, tooks, "the primary-wide handler")
	if first.who != "worker" || first.file == nil || !first.has {
		t.Errorf("first handler: %s, took a file: %v, HasHandle: %v", first.who, first.file != nil, first.has)
	}
	if second.who != "primary-wide" || second.file != nil || second.has {
		t.Errorf("second handler: %s, took a file: %v, HasHandle: %v", second.who, second.file != nil, second.has)
	}
	if first.file != nil {
		first.file.Close()
	}
}

// A message of 1 MiB with a handle, both ways.
func TestProcessBigMessageWithHandle(t *testing.T) {
	w := fork(t, "pm-bighandle")
	in := make(chan Message, 1)
	files := make(chan *os.File, 1)
	w.OnMessage(func(m Message) {
		files <- m.File() // taken here: unclaimed handles close when handlers return
		in <- m
	})
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(data)
	sum := sha256.Sum256(data)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	err = w.Send(pmBig{Data: data}, WithHandle(pw))
	pw.Close()
	if err != nil {
		t.Fatalf("Send of 1 MiB with a handle: %v", err)
	}
	f := recv(t, files, "the reply")
	m := recv(t, in, "the reply")
	var back pmBig
	if err := m.Decode(&back); err != nil {
		t.Fatal(err)
	}
	if back.Sum != hex.EncodeToString(sum[:]) || !bytes.Equal(back.Data, data) {
		t.Fatalf("reply: %d bytes, sum %q; want the 1 MiB sent back", len(back.Data), back.Sum)
	}
	if f == nil {
		t.Fatal("the reply came without its handle")
	}
	// The worker sent the pipe back: the primary now holds the only
	// writer, so closing it ends the pipe.
	io.WriteString(f, "and back\n")
	f.Close()
	want := fmt.Sprintf("worker got %d bytes %x\nand back\n", len(data), sum)
	if got := pmReadAll(t, pr); got != want {
		t.Errorf("pipe: %q, want %q", got, want)
	}
}

// pm-storm and the test below: many messages with handles in flight in
// both directions at once.
const pmStormN = 1000

type pmStorm struct {
	Seq     int
	Padding string
}

func init() {
	helpers["pm-storm"] = func() {
		self := Self()
		var got atomic.Int64
		r, w, err := os.Pipe()
		if err != nil {
			os.Exit(8)
		}
		defer w.Close()
		self.OnMessage(func(m Message) {
			var s pmStorm
			m.Decode(&s)
			if s.Seq < 0 { // the start signal
				go func() {
					for i := range pmStormN {
						if err := self.Send(pmStorm{Seq: i, Padding: s.Padding}, WithHandle(r)); err != nil {
							self.Send(pmStorm{Seq: -2, Padding: err.Error()})
							return
						}
					}
				}()
				return
			}
			if f := m.File(); f != nil {
				f.Close()
				if got.Add(1) == pmStormN {
					self.Send(pmStorm{Seq: -3})
				}
			}
		})
		select {}
	}
}

func TestProcessHandlesBothWays(t *testing.T) {
	w := fork(t, "pm-storm")
	var got atomic.Int64
	all := make(chan struct{})
	workerDone := make(chan pmStorm, 2)
	w.OnMessage(func(m Message) {
		var s pmStorm
		m.Decode(&s)
		if s.Seq < 0 {
			workerDone <- s
			return
		}
		if f := m.File(); f != nil {
			f.Close()
			if got.Add(1) == pmStormN {
				close(all)
			}
		}
	})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	padding := strings.Repeat("p", 8<<10) // fills the socket buffers both ways
	if err := w.Send(pmStorm{Seq: -1, Padding: padding}); err != nil {
		t.Fatal(err)
	}
	for i := range pmStormN {
		if err := w.Send(pmStorm{Seq: i, Padding: padding}, WithHandle(pr)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	recv(t, all, fmt.Sprintf("the worker's %d handles", pmStormN))
	if s := recv(t, workerDone, "the worker to receive the primary's handles"); s.Seq != -3 {
		t.Fatalf("worker: %s", s.Padding)
	}
}

// A message larger than Settings.MaxMessageSize is refused by Send, on
// both sides, and the handle stays open.
func TestProcessMaxMessageSize(t *testing.T) {
	pmSetup(t, Settings{MaxMessageSize: 1024})
	w := fork(t, "pm-maxsize")
	in := pmInbox(w)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	big := strings.Repeat("y", 2000)
	if err := w.Send(big); err == nil || !strings.Contains(err.Error(), "MaxMessageSize") {
		t.Errorf("Send of 2000 bytes with a 1024 byte limit = %v, want an error naming MaxMessageSize", err)
	}
	if err := w.Send(big, WithHandle(f)); err == nil {
		t.Errorf("Send of 2000 bytes with a handle succeeded")
	}
	if _, err := f.Stat(); err != nil {
		t.Errorf("the handle of a refused Send was closed: %v", err)
	}
	var reply string
	pmAsk(t, w, in, 2000, &reply)
	if !strings.HasPrefix(reply, "error: ") || !strings.Contains(reply, "MaxMessageSize") {
		t.Errorf("worker's Send of 2000 bytes: %q, want an error naming MaxMessageSize", reply)
	}
	pmAsk(t, w, in, 100, &reply)
	if reply != strings.Repeat("x", 100) {
		t.Errorf("worker's Send of 100 bytes: %q", reply)
	}
	if !w.IsConnected() {
		t.Errorf("the worker was disconnected")
	}
}

// A process with CLUSTERNET_WORKER_ID set that was not forked by a
// primary reports ErrNoChannel, clearly, instead of hanging.
func TestProcessNoChannel(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"no channel", []string{envWorkerID + "=1"}},
		{"channel not open", []string{envWorkerID + "=1", envChannel + "=987"}},
		{"channel not a number", []string{envWorkerID + "=1", envChannel + "=pipe"}},
		{"bad id", []string{envWorkerID + "=first", envChannel + "=987"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			cmd := pmCommand(ctx, exe, append([]string{envHelper + "=pm-nochannel"}, tc.env...))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("worker without a channel: %v (ctx: %v); stderr:\n%s", err, ctx.Err(), stderr.Bytes())
			}
			var r pmNoChannel
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("worker's report %q: %v", out, err)
			}
			if !r.HasSelf {
				t.Fatalf("Self() is nil in a process with %s set", envWorkerID)
			}
			if !r.SendNoChannel || !r.DisconnectNoChannel || !r.KillNoChannel || !r.ListenNoChannel {
				t.Errorf("want ErrNoChannel from Send %v, Disconnect %v, Kill %v, Listen %v", r.SendNoChannel, r.DisconnectNoChannel, r.KillNoChannel, r.ListenNoChannel)
			}
			if !strings.Contains(r.SendErr, envWorkerID) {
				t.Errorf("Send error %q does not say which variable is wrong", r.SendErr)
			}
			if r.Connected || r.EnvLeft {
				t.Errorf("IsConnected() = %v, %s still set: %v", r.Connected, envWorkerID, r.EnvLeft)
			}
		})
	}
}

// pmCommand runs the test binary with env added to the test's
// environment, less the package's own variables.
func pmCommand(ctx context.Context, exe string, env []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, exe)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLUSTERNET_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = time.Second
	return cmd
}
