package clusternet

// The events of a worker, their order, and what State, IsConnected, IsDead,
// Workers and the ids say along the way.

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func init() {
	helpers["pm-exit42"] = func() { os.Exit(42) }
}

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
		info := ask[pmInfo](t, w, messages(w), []string{})
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
	info := ask[pmInfo](t, w, messages(w), []string{envWorkerID, envChannel, envSerialization, envMaxMessage})
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

func pmIDs(ws []*Worker) []int {
	ids := make([]int, len(ws))
	for i, w := range ws {
		ids[i] = w.ID()
	}
	return ids
}
