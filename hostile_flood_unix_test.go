//go:build unix

package clusternet

// A worker that floods the primary: messages, control frames, listen
// requests. The primary is not to trust it: its memory stays bounded, the
// worker is disconnected with an error event or its requests are refused,
// and the other workers do not notice. (Malformed frames, oversized frames
// and unannounced descriptors are in hostile_unix_test.go.)

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func init() {
	// hf-flood floods the primary with what HF_MODE says once the primary
	// sends "go", writing frames straight to the channel socket, for at most
	// HF_FOR (default 2s) or until the primary closes the channel. The
	// flood runs inside the message handler, so the worker reads nothing
	// from the primary meanwhile. Then it sends "flooded <n>".
	helpers["hf-flood"] = func() {
		self := Self()
		c := self.ch.t.(*unixTransport).c
		self.OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			if s != "go" {
				return
			}
			f, _ := encodeMessage(self.codec, "ready", nil)
			self.ch.sendWait(f)
			d, err := time.ParseDuration(os.Getenv("HF_FOR"))
			if err != nil {
				d = 2 * time.Second
			}
			n, err := hfFlood(c, os.Getenv("HF_MODE"), d)
			if err != nil {
				os.Exit(0) // the primary hung up on us
			}
			f, _ = encodeMessage(self.codec, fmt.Sprintf("flooded %d", n), nil)
			if _, err := c.Write(f.b); err != nil {
				os.Exit(0)
			}
		})
		select {}
	}
	// hf-listen asks to listen on HF_N loopback addresses, one at a time,
	// through the package, and reports how many it got and the first error.
	helpers["hf-listen"] = func() {
		self := Self()
		self.OnMessage(func(Message) {
			var want int
			fmt.Sscan(os.Getenv("HF_N"), &want)
			got, first := 0, ""
			var lns []net.Listener
			for i := range want {
				ln, err := Listen("tcp4", fmt.Sprintf("127.1.%d.%d:0", i/250, 1+i%250))
				if err != nil {
					if first == "" {
						first = err.Error()
					}
					continue
				}
				got++
				lns = append(lns, ln)
			}
			self.Send(fmt.Sprintf("%d %s", got, first))
		})
		select {}
	}
}

// hfFrame builds a frame with a body.
func hfFrame(kind frameKind, body []byte) []byte {
	return append(appendHeader(nil, kind, len(body), 0), body...)
}

// hfFlood writes frames of the given mode to c until d has passed or a
// write fails, and returns how many it wrote.
func hfFlood(c *net.UnixConn, mode string, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	payload, _ := json.Marshal(strings.Repeat("f", 8<<10))
	msg := hfFrame(frameMessage, append([]byte{byte(handleNone)}, payload...))
	bad := hfFrame(frameMessage, append([]byte{byte(handleNone)}, `{"not": json}`...))
	n := 0
	var buf []byte
	for time.Now().Before(deadline) {
		buf = buf[:0]
		for range 64 {
			switch mode {
			case "messages":
				buf = append(buf, msg...)
			case "badjson": // frames intact, bodies that do not decode
				buf = append(buf, bad...)
			case "online":
				buf = append(buf, hfFrame(frameOnline, nil)...)
			case "listening":
				a, _ := json.Marshal(Address{Network: "tcp", Host: fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255), Port: 1 + n>>24, Type: TCP4})
				buf = append(buf, hfFrame(frameListening, a)...)
			case "listen":
				req, _ := json.Marshal(listenRequest{Seq: uint32(n), Network: "bogus", Address: "nowhere"})
				buf = append(buf, hfFrame(frameListen, req)...)
			case "demand":
				b := binary.BigEndian.AppendUint32(nil, 12345)
				buf = append(buf, hfFrame(frameDemand, binary.BigEndian.AppendUint32(b, 1))...)
			default:
				return n, fmt.Errorf("unknown mode %q", mode)
			}
			n++
		}
		if _, err := c.Write(buf); err != nil {
			return n, err
		}
	}
	return n, nil
}

// hfHeap samples the primary's heap until stop is closed and returns the
// largest value seen above the start.
func hfHeap(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	go func() {
		var peak uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base {
				peak = max(peak, ms.HeapAlloc-base)
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// hfBystander is an echo worker whose round trips are timed while a flood
// goes on.
type hfBystander struct {
	w     *Worker
	in    <-chan Message
	stop  chan struct{}
	done  chan struct{}
	n     atomic.Int64
	worst atomic.Int64 // nanoseconds
	err   atomic.Value
}

func hfStartBystander(t testing.TB) *hfBystander {
	b := &hfBystander{w: fork(t, "echo"), stop: make(chan struct{}), done: make(chan struct{})}
	b.in = messages(b.w)
	echo(t, b.w, b.in, -1)
	go func() {
		defer close(b.done)
		for i := 0; ; i++ {
			select {
			case <-b.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			start := time.Now()
			if err := b.w.Send(i); err != nil {
				b.err.Store(err.Error())
				return
			}
			select {
			case <-b.in:
			case <-time.After(testTimeout):
				b.err.Store(fmt.Sprintf("no echo of %d in %v", i, testTimeout))
				return
			}
			b.n.Add(1)
			if d := int64(time.Since(start)); d > b.worst.Load() {
				b.worst.Store(d)
			}
		}
	}()
	return b
}

func (b *hfBystander) finish(t testing.TB) string {
	t.Helper()
	close(b.stop)
	<-b.done
	if e := b.err.Load(); e != nil {
		t.Errorf("the other worker noticed: %v", e)
	}
	// However short the flood, the other worker must still answer after it.
	if err := b.w.Send("after"); err != nil {
		t.Errorf("the other worker's channel: %v", err)
	} else {
		recv(t, b.in, "the other worker's answer after the flood")
		b.n.Add(1)
	}
	return fmt.Sprintf("other worker: %d round trips, slowest %v", b.n.Load(), time.Duration(b.worst.Load()).Round(time.Microsecond))
}

// hfStart forks a flooder in mode and starts its flood; messages from it
// arrive on the returned channel, its error events on the other.
func hfStart(t testing.TB, mode string, env ...string) (*Worker, <-chan Message, <-chan error) {
	t.Helper()
	w := fork(t, "hf-flood", append([]string{"HF_MODE=" + mode}, env...)...)
	in := make(chan Message, 16)
	w.OnMessage(func(m Message) {
		var s string
		if m.Decode(&s) == nil && (s == "ready" || strings.HasPrefix(s, "flooded")) {
			in <- m
		}
	})
	errs := make(chan error, 16)
	w.OnError(func(err error) {
		select {
		case errs <- err:
		default:
		}
	})
	if err := w.Send("go"); err != nil {
		t.Fatal(err)
	}
	recv(t, in, "the flooder to start")
	return w, in, errs
}

// TestHostileFloodMessages: a worker sends 8 KiB messages as fast as it can.
// The primary reads them only as fast as its handlers take them (the
// inbox holds at most 1024 per worker), so its memory stays bounded; when
// the primary answers every one and the worker reads none of the answers,
// the worker is disconnected once 4 × MaxMessageSize (at least 16 MiB) is
// queued for it.
func TestHostileFloodMessages(t *testing.T) {
	for _, answer := range []bool{false, true} {
		name := "read"
		if answer {
			name = "answered"
		}
		t.Run(name, func(t *testing.T) {
			withSettings(t, Settings{MaxMessageSize: 64 << 10})
			by := hfStartBystander(t)
			stopHeap := make(chan struct{})
			peak := hfHeap(stopHeap)
			var got atomic.Int64
			env := []string{"HF_MODE=messages"}
			if answer {
				// Until the primary gives up on it: under -race, with
				// other tests' recorders, the primary answers slowly.
				env = append(env, "HF_FOR=15s")
			}
			w := fork(t, "hf-flood", env...)
			w.OnMessage(func(m Message) {
				got.Add(1)
				if answer {
					w.Send(json.RawMessage(m.Raw()))
				}
			})
			errs := make(chan error, 16)
			w.OnError(func(err error) { errs <- err })
			in := make(chan string, 16)
			w.OnMessage(func(m Message) {
				var s string
				if m.Decode(&s) == nil && len(s) < 100 {
					in <- s
				}
			})
			start := time.Now()
			if err := w.Send("go"); err != nil {
				t.Fatal(err)
			}
			var outcome string
			if answer {
				err := recv(t, errs, "the error event")
				if !strings.Contains(err.Error(), "does not read") || !strings.Contains(err.Error(), fmt.Sprintf("worker %d", w.ID())) {
					t.Errorf("error event %q: want it to name the worker and say it does not read", err)
				}
				waitDone(t, w)
				outcome = fmt.Sprintf("disconnected after %v: %v", time.Since(start).Round(time.Millisecond), err)
			} else {
				for s := ""; !strings.HasPrefix(s, "flooded"); {
					s = recv(t, in, "the end of the flood")
					outcome = s
				}
				if !w.IsConnected() {
					t.Errorf("the worker was disconnected for sending valid messages")
				}
			}
			close(stopHeap)
			p := <-peak
			t.Logf("%d messages of 8 KiB received; %s; primary heap peak +%d MiB; %s", got.Load(), outcome, p>>20, by.finish(t))
			if p > 96<<20 {
				t.Errorf("the primary's heap grew by %d MiB", p>>20)
			}
		})
	}
}

// TestHostileFloodControl: control frames by the hundred thousand. A
// second online report is a protocol error; listening reports wait for the
// handlers as messages do and are remembered up to a bound; listen
// requests for a network that does not exist are refused; demands for a
// server the worker does not use are ignored. The primary's memory stays
// bounded throughout.
func TestHostileFloodControl(t *testing.T) {
	for _, tc := range []struct {
		mode, want string // want: the error event, or "" if the worker stays connected
	}{
		{"online", "online twice"},
		{"listening", "listening on more than"},
		{"listen", ""},
		{"demand", ""},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			by := hfStartBystander(t)
			stopHeap := make(chan struct{})
			peak := hfHeap(stopHeap)
			w, in, errs := hfStart(t, tc.mode)
			var outcome string
			if tc.want != "" {
				err := recv(t, errs, "the error event")
				if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error event %v; want a protocol error saying %q", err, tc.want)
				}
				waitDone(t, w)
				outcome = "disconnected: " + err.Error()
			} else {
				for s := ""; !strings.HasPrefix(s, "flooded"); {
					m := recv(t, in, "the end of the flood")
					m.Decode(&s)
					outcome = s + " frames, still connected"
				}
				select {
				case err := <-errs:
					t.Errorf("error event: %v", err)
				default:
				}
			}
			close(stopHeap)
			p := <-peak
			t.Logf("%s flood: %s; primary heap peak +%d MiB; %s", tc.mode, outcome, p>>20, by.finish(t))
			if p > 64<<20 {
				t.Errorf("the primary's heap grew by %d MiB", p>>20)
			}
			if tc.mode == "listening" {
				if n := len(w.listenedAddresses()); n > maxListeningReports {
					t.Errorf("the primary remembers %d addresses for the worker", n)
				}
			}
		})
	}
}

// TestHostileListenMany: a worker asks to listen on 1000 addresses. The
// primary binds the first 256 for it and refuses the rest with a clear
// error; its descriptors stay bounded and come back when the worker is
// gone; another worker keeps serving meanwhile.
func TestHostileListenMany(t *testing.T) {
	setPolicy(t, SchedRR)
	fds := openFDs(t)
	addr := freePort(t)
	good := relFork(t, 1, addr)[0]
	w := fork(t, "hf-listen", "HF_N=1000")
	in := messages(w)
	if err := w.Send("go"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	maxFDs := 0
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			n := openFDs(t)
			mu.Lock()
			maxFDs = max(maxFDs, n)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	res := &relResult{}
	var report string
	for report == "" {
		relRequest(res, addr, testTimeout)
		select {
		case m := <-in:
			m.Decode(&report)
		default:
		}
	}
	close(stop)
	<-sampled
	var got int
	var first string
	fmt.Sscanf(report, "%d", &got)
	_, first, _ = strings.Cut(report, " ")
	t.Logf("listened on %d of 1000 addresses; first refusal: %s; primary descriptors at most %d (from %d); meanwhile worker %d served %v", got, first, maxFDs, fds, good.ID(), res)
	if got != maxListensPerWorker || !strings.Contains(first, "the most one worker may") {
		t.Errorf("got %d listeners, first error %q; want %d and a refusal", got, first, maxListensPerWorker)
	}
	// Each server is a listening socket and its copy that the accept loop
	// polls, and the worker's handoff socket is two more (the primary's end,
	// and its copy of the worker's); the two workers' channels and output
	// come on top.
	if bound := fds + 4*maxListensPerWorker + 16; maxFDs > bound {
		t.Errorf("the primary had %d descriptors open, more than %d", maxFDs, bound)
	}
	if res.failed != 0 || res.dialFailed != 0 {
		t.Errorf("the other worker: %v", res)
	}
	w.Kill(os.Kill)
	waitDone(t, w)
	relServes(t, addr)
	relStopAll(t)
	fdsAtMost(t, fds, "after the worker that listened everywhere is gone")
}
