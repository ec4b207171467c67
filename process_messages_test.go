package clusternet

// Messages: both ways, in order, before the handlers are added, to a worker
// that never listens, both serializations, the size limit, after the end.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func init() {
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
	in := messages(w)
	back := ask[map[string]any](t, w, in, map[string]any{"text": "<&> \"quoted\" ünïcode \u2028", "list": []any{1.5, "two", nil, true}})
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
		in := messages(w)
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
	withSettings(t, Settings{Serialization: Gob, Env: []string{"PM_MARK=" + mark}})
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
		in := messages(tc.w)
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

// A message larger than Settings.MaxMessageSize is refused by Send, on
// both sides, and the handle stays open.
func TestProcessMaxMessageSize(t *testing.T) {
	withSettings(t, Settings{MaxMessageSize: 1024})
	w := fork(t, "pm-maxsize")
	in := messages(w)
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
	reply := ask[string](t, w, in, 2000)
	if !strings.HasPrefix(reply, "error: ") || !strings.Contains(reply, "MaxMessageSize") {
		t.Errorf("worker's Send of 2000 bytes: %q, want an error naming MaxMessageSize", reply)
	}
	reply = ask[string](t, w, in, 100)
	if reply != strings.Repeat("x", 100) {
		t.Errorf("worker's Send of 100 bytes: %q", reply)
	}
	if !w.IsConnected() {
		t.Errorf("the worker was disconnected")
	}
}

// pmMarks makes markers unique across tests and repeated runs (-count).
var pmMarks atomic.Int64

func pmMark(t testing.TB) string {
	return fmt.Sprintf("%s#%d", t.Name(), pmMarks.Add(1))
}
