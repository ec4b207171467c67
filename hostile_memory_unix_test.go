//go:build unix

package clusternet

// A worker that makes the primary hold what it sends: output that nobody
// reads (Settings.Silent), messages that do not decode. What the primary
// keeps for it is bounded by named constants, the rest is dropped and
// counted in Stats, and the other workers do not notice. (Floods of valid
// messages and control frames are in hostile_flood_unix_test.go.)

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hmMarker is the last line a spewing worker writes on each stream.
const hmMarker = "the worker's last line"

// hmHeapSlack is what the primary's heap may grow by beyond the bounds
// under test: the test's and the runtime's own allocations, and garbage not
// collected yet (the runtime lets the heap reach 4 MiB before it collects).
const hmHeapSlack = 16 << 20

// hmErrorHandlerTime is how long the primary's error handler takes, as
// one that logs to a slow sink would.
const hmErrorHandlerTime = time.Millisecond

func init() {
	// hm-spew writes 1 MiB chunks to stdout and stderr, in turn, as fast as
	// it can for HM_FOR (default 2s), then hmMarker on each; it sends the
	// primary how many bytes it wrote, and exits.
	helpers["hm-spew"] = func() {
		d, err := time.ParseDuration(os.Getenv("HM_FOR"))
		if err != nil {
			d = 2 * time.Second
		}
		line := []byte("spew spew spew spew spew spew spew spew spew spew spew spew spew spew spew\n")
		chunk := bytes.Repeat(line, (1<<20)/len(line))
		var written int64
		for deadline := time.Now().Add(d); time.Now().Before(deadline); {
			for _, f := range []*os.File{os.Stdout, os.Stderr} {
				n, _ := f.Write(chunk)
				written += int64(n)
			}
		}
		for _, f := range []*os.File{os.Stdout, os.Stderr} {
			n, _ := fmt.Fprintln(f, hmMarker)
			written += int64(n)
		}
		f, _ := encodeMessage(Self().codec, written, nil)
		Self().ch.sendWait(f)
	}
}

// hmDrain reads r to its end and returns how many bytes it read and the
// last of them.
func hmDrain(t testing.TB, r io.Reader) (int64, string) {
	t.Helper()
	type result struct {
		n    int64
		tail string
	}
	done := make(chan result, 1)
	go func() {
		var n int64
		var tail []byte
		buf := make([]byte, 32<<10)
		for {
			k, err := r.Read(buf)
			n += int64(k)
			tail = append(tail, buf[:k]...)
			if len(tail) > 256 {
				tail = append(tail[:0], tail[len(tail)-256:]...)
			}
			if err != nil {
				done <- result{n, string(tail)}
				return
			}
		}
	}()
	res := recv(t, done, "the worker's output to end")
	return res.n, res.tail
}

// TestHostileSilentOutput: a Silent worker writes to stdout and stderr as
// fast as it can while nobody reads Worker.Stdout or Stderr. The primary
// keeps at most maxBufferedOutput unread bytes per stream and drops the
// oldest: its heap stays bounded, the worker is never blocked, every byte
// is either read or counted in Stats().OutputDropped, and what is read
// afterwards is the newest output, ending with the worker's last line.
func TestHostileSilentOutput(t *testing.T) {
	withSettings(t, Settings{Silent: true})
	stopHeap := make(chan struct{})
	peak := hfHeap(stopHeap)
	start := time.Now()
	w := fork(t, "hm-spew")
	in := make(chan Message, 1)
	w.OnMessage(func(m Message) { in <- m })
	var written int64
	if err := recv(t, in, "the worker's byte count").Decode(&written); err != nil {
		t.Fatal(err)
	}
	spewed := time.Since(start)
	waitDone(t, w)
	close(stopHeap)
	p := <-peak
	outN, outTail := hmDrain(t, w.Stdout())
	errN, errTail := hmDrain(t, w.Stderr())
	st := w.Stats()
	t.Logf("worker wrote %d MiB in %v; primary heap peak +%.1f MiB; read %d + %d bytes, %d MiB dropped",
		written>>20, spewed.Round(time.Millisecond), float64(p)/(1<<20), outN, errN, st.OutputDropped>>20)
	// Each stream: a backing array of at most maxBufferedOutput, and the
	// smaller ones it outgrew.
	if bound := 2*2*maxBufferedOutput + hmHeapSlack; p > uint64(bound) {
		t.Errorf("the primary's heap grew by %d MiB, more than %d MiB", p>>20, bound>>20)
	}
	if st.OutputDropped == 0 {
		t.Errorf("Stats().OutputDropped is 0 after %d MiB nobody read", written>>20)
	}
	if got := outN + errN + int64(st.OutputDropped); got != written {
		t.Errorf("read %d bytes and dropped %d: %d in all, but the worker wrote %d", outN+errN, st.OutputDropped, got, written)
	}
	for _, s := range []struct {
		name string
		n    int64
		tail string
	}{{"Stdout", outN, outTail}, {"Stderr", errN, errTail}} {
		if s.n > maxBufferedOutput {
			t.Errorf("%s() held %d bytes, more than %d", s.name, s.n, maxBufferedOutput)
		}
		if !strings.HasSuffix(s.tail, "\n"+hmMarker+"\n") {
			t.Errorf("%s() ends with %q; want the worker's last line %q", s.name, s.tail, hmMarker)
		}
	}
}

// TestHostileInvalidMessages: a worker sends messages that are not valid
// JSON as fast as it can for 2 s while another worker exchanges messages
// with the primary. Every one is dropped and counted in
// Stats().MessagesDropped; their error events wait in the worker's inbox,
// as its messages would, and are coalesced: one waits at a time, and says
// how many messages it stands for. The primary holds nothing per dropped
// message, the flooder stays connected, and the other worker's round trips
// all succeed.
func TestHostileInvalidMessages(t *testing.T) {
	by := hfStartBystander(t)
	stopHeap := make(chan struct{})
	peak := hfHeap(stopHeap)
	w := fork(t, "hf-flood", "HF_MODE=badjson")
	in := make(chan string, 16)
	w.OnMessage(func(m Message) {
		var s string
		if m.Decode(&s) == nil {
			in <- s
		}
	})
	coalesced := regexp.MustCompile(fmt.Sprintf(`^clusternet: worker %d: dropped (\d+) messages that are not valid json; the first: `, w.ID()))
	single := fmt.Sprintf("clusternet: worker %d: dropped a message that is not valid json: ", w.ID())
	var events, reported atomic.Int64
	var mu sync.Mutex
	var first, unexpected string
	w.OnError(func(err error) {
		// As a handler that logs to a slow sink: the events come faster
		// than they run.
		time.Sleep(hmErrorHandlerTime)
		n := int64(1)
		if m := coalesced.FindStringSubmatch(err.Error()); m != nil {
			n, _ = strconv.ParseInt(m[1], 10, 64)
		} else if !strings.HasPrefix(err.Error(), single) {
			mu.Lock()
			unexpected = err.Error()
			mu.Unlock()
		}
		mu.Lock()
		if first == "" {
			first = err.Error()
		}
		mu.Unlock()
		events.Add(1)
		reported.Add(n)
	})
	if err := w.Send("go"); err != nil {
		t.Fatal(err)
	}
	if s := recv(t, in, "the flooder to start"); s != "ready" {
		t.Fatalf("the flooder says %q; want ready", s)
	}
	var sent int64
	timeout := time.After(testTimeout)
	for s := ""; !strings.HasPrefix(s, "flooded "); {
		select {
		case s = <-in:
			sent, _ = strconv.ParseInt(strings.TrimPrefix(s, "flooded "), 10, 64)
		case <-timeout:
			close(stopHeap)
			t.Fatalf("timed out waiting for the end of the flood: %d error events ran, for %d messages; primary heap peak +%d MiB",
				events.Load(), reported.Load(), <-peak>>20)
		}
	}
	// The error events for the messages before "flooded" were posted
	// before it, and have run.
	close(stopHeap)
	p := <-peak
	st := w.Stats()
	mu.Lock()
	firstErr, odd := first, unexpected
	mu.Unlock()
	t.Logf("%d invalid messages sent, %d dropped, in %d error events (first: %q); primary heap peak +%.1f MiB; %s",
		sent, st.MessagesDropped, events.Load(), firstErr, float64(p)/(1<<20), by.finish(t))
	// Even one event per message would be at most inboxMaxMessages events
	// of less than 1 KiB each.
	if bound := inboxMaxMessages<<10 + hmHeapSlack; p > uint64(bound) {
		t.Errorf("the primary's heap grew by %d MiB, more than %d MiB", p>>20, bound>>20)
	}
	if sent == 0 || st.MessagesDropped != uint64(sent) {
		t.Errorf("Stats().MessagesDropped is %d; want the %d invalid messages sent", st.MessagesDropped, sent)
	}
	if reported.Load() != sent {
		t.Errorf("the error events report %d dropped messages; want %d", reported.Load(), sent)
	}
	if events.Load() >= sent {
		t.Errorf("%d error events for %d invalid messages: not coalesced", events.Load(), sent)
	}
	if odd != "" {
		t.Errorf("error event %q; want it to name the worker and say how many messages were dropped", odd)
	}
	if !w.IsConnected() {
		t.Errorf("the flooder was disconnected for messages that do not decode")
	}
}

// TestOutputBufferKeepsNewest checks the ring behind Worker.Stdout against
// a plain slice that keeps the newest maxBufferedOutput bytes: writes and
// reads of every size, wrapping around, growing, and writes larger than the
// bound.
func TestOutputBufferKeepsNewest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := newOutputBuffer()
	var want []byte // unread, as it should be
	var dropped uint64
	next := byte(0)
	for i := range 1500 {
		size := rng.IntN(8 << 10)
		switch rng.IntN(20) {
		case 0:
			size = rng.IntN(2 * maxBufferedOutput)
		case 1, 2:
			size = rng.IntN(maxBufferedOutput / 2)
		}
		if rng.IntN(2) == 0 {
			p := make([]byte, size)
			for j := range p {
				p[j] = next
				next++
			}
			if n, err := b.Write(p); n != size || err != nil {
				t.Fatalf("op %d: Write(%d bytes) = %d, %v", i, size, n, err)
			}
			want = append(want, p...)
			if over := len(want) - maxBufferedOutput; over > 0 {
				dropped += uint64(over)
				want = want[over:]
			}
		} else if len(want) > 0 {
			p := make([]byte, size+1)
			n, err := b.Read(p)
			if err != nil || n != min(len(p), len(want)) || !bytes.Equal(p[:n], want[:n]) {
				t.Fatalf("op %d: Read(%d bytes) = %d, %v; want the %d oldest of %d unread bytes", i, len(p), n, err, min(len(p), len(want)), len(want))
			}
			want = want[n:]
		}
		if len(b.buf) > maxBufferedOutput || b.dropped != dropped {
			t.Fatalf("op %d: ring of %d bytes, %d dropped; want at most %d, %d dropped", i, len(b.buf), b.dropped, maxBufferedOutput, dropped)
		}
	}
	b.closeWrite()
	rest, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(rest, want) {
		t.Fatalf("after close: read %d bytes, %v; want the %d unread", len(rest), err, len(want))
	}
	if got := b.droppedBytes(); got != dropped {
		t.Errorf("droppedBytes() = %d; want %d", got, dropped)
	}
}
