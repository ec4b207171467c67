//go:build unix

package clusternet

// Fuzz targets for what the primary decodes from a worker, which it does
// not trust. Seed corpora are in testdata/fuzz; .ci/run runs every target
// for a bounded time:
//
//	FuzzFraming  the frame reader on any byte stream, with descriptors
//	             arriving anywhere in it
//	FuzzHandles  the primary's whole reading path for a worker (every frame
//	             kind, control frames' JSON, handle announcements) with real
//	             descriptors: none may leak
//	FuzzJSON     a message body under JSON serialization
//	FuzzJSONCheck
//	             the arrival check for JSON, against json.Valid
//	FuzzGob      a message body under Gob serialization, checked and
//	             decoded on its own and with a decoder kept for its types
//	FuzzHandover what a new primary reads from the old one in an upgrade
//	             (fuzz_upgrade_unix_test.go)
//
// No input may panic, claim more memory than a bound proportional to its
// size and the frame limit, or leave a descriptor open.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

// fuzzTransport plays a worker's side of the channel from a byte string:
// it returns the bytes chunk at a time (0: as many as fit), with the
// descriptors plan says attached to the first reads, and swallows writes.
type fuzzTransport struct {
	data  []byte
	chunk int
	plan  uint16 // 2 bits per read, for the first 8 reads: descriptors attached
	reads int
	sent  int // descriptors handed to the reader
}

func (t *fuzzTransport) recv(b []byte) (int, []sysHandle, error) {
	if len(t.data) == 0 {
		return 0, nil, io.EOF
	}
	n := min(len(b), len(t.data))
	if t.chunk > 0 {
		n = min(n, t.chunk)
	}
	copy(b, t.data[:n])
	t.data = t.data[n:]
	var hs []sysHandle
	if t.reads < 8 {
		for range t.plan >> (2 * t.reads) & 3 {
			fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				panic(err)
			}
			hs = append(hs, fd)
		}
	}
	t.reads++
	t.sent += len(hs)
	return n, hs, nil
}

func (t *fuzzTransport) send(b []byte, hs []sysHandle) error { return nil }
func (t *fuzzTransport) writev(bufs [][]byte) error          { return nil }
func (t *fuzzTransport) close() error                        { return nil }

// fuzzAllocated returns the bytes allocated so far.
func fuzzAllocated() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// fuzzAllocBound is what decoding input may allocate: the largest frame it
// may announce, and a multiple of its size.
func fuzzAllocBound(input, maxFrame int) uint64 {
	return uint64(maxFrame) + 256*uint64(input) + 4<<20
}

const fuzzMaxFrame = 1 << 20

// gobClaimLimit is what gob may allocate for a length a message claims
// (encoding/gob's internal/saferio chunk), and a little more.
const gobClaimLimit = 11 << 20 // larger than the read buffer: both body paths run

func fuzzHeader(kind frameKind, n, handles int) []byte { return appendHeader(nil, kind, n, handles) }

func fuzzFrame(kind frameKind, handles int, body []byte) []byte {
	return append(fuzzHeader(kind, len(body), handles), body...)
}

func fuzzMessage(kind handleKind, handles int, value string) []byte {
	return fuzzFrame(frameMessage, handles, append([]byte{byte(kind)}, value...))
}

func FuzzFraming(f *testing.F) {
	f.Add(fuzzMessage(handleNone, 0, `"hello"`+"\n"), uint8(0), uint16(0))
	f.Add(append(fuzzMessage(handleConn, 1, "1\n"), fuzzFrame(frameOnline, 0, nil)...), uint8(3), uint16(1))
	f.Add(fuzzHeader(frameMessage, fuzzMaxFrame, 0), uint8(0), uint16(0))
	f.Add(fuzzHeader(frameMessage, fuzzMaxFrame+1, 0), uint8(0), uint16(0))
	f.Add(fuzzMessage(handleNone, 0, "1\n"), uint8(1), uint16(0xffff))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, plan uint16) {
		fds := openFDs(t)
		before := fuzzAllocated()
		tr := &fuzzTransport{data: data, chunk: int(chunk), plan: plan}
		fr := newFrameReader(tr, fuzzMaxFrame)
		var consumed []byte
		claimed := 0
		for {
			fr2, err := fr.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("error %v is neither EOF nor a protocol error", err)
				}
				break
			}
			if fr2.kind == 0 || fr2.kind >= frameKindEnd {
				t.Fatalf("frame of kind %d", fr2.kind)
			}
			if len(fr2.body) > fuzzMaxFrame {
				t.Fatalf("body of %d bytes, over the limit", len(fr2.body))
			}
			consumed = append(consumed, fuzzFrame(fr2.kind, len(fr2.handles), fr2.body)...)
			claimed += len(fr2.handles)
			closeHandles(fr2.handles)
		}
		fr.close()
		// The frames returned are the stream's prefix, byte for byte.
		if !bytes.HasPrefix(data, consumed) {
			t.Fatalf("the frames read are not the start of the stream")
		}
		if claimed > tr.sent {
			t.Fatalf("frames claimed %d descriptors of %d sent", claimed, tr.sent)
		}
		if got := fuzzAllocated() - before; got > fuzzAllocBound(len(data), fuzzMaxFrame) {
			t.Fatalf("reading %d bytes allocated %d bytes", len(data), got)
		}
		if got := openFDs(t); got != fds {
			t.Fatalf("%d descriptors open after reading, %d before", got, fds)
		}
	})
}

// fuzzWorker is a worker as the primary sees it, on a fuzzTransport.
// fuzzSelf stands for the fuzzed worker's process: this one.
var fuzzSelf, _ = os.FindProcess(os.Getpid())

func fuzzWorker(tr transport, codec Serialization) *Worker {
	w := &Worker{
		id:         1,
		codec:      codec,
		max:        fuzzMaxFrame - 1,
		connected:  true,
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		subs:       make(map[uint32]*subscription),
		listenNote: make(chan struct{}),
		online:     true,     // as after its online report: the stream is what follows
		proc:       fuzzSelf, // a worker always has one: a relative socket path is resolved in its directory
	}
	w.ch = newChannel(tr, fuzzMaxFrame)
	w.ch.limit = sendQueueLimit(w.max)
	return w
}

// fuzzDrain waits until the events posted so far have run (and released
// the handles that came with messages).
func fuzzDrain() {
	done := make(chan struct{})
	events.post(func() { close(done) })
	<-done
}

// fuzzRefuseListens makes the primary refuse every listen request while
// fuzzing: a fuzzed request must not bind anything.
func fuzzRefuseListens(f *testing.F) {
	cluster.mu.Lock()
	old := cluster.settings
	cluster.settings.AllowListen = func(*Worker, string, string) error { return errors.New("fuzzing") }
	cluster.mu.Unlock()
	f.Cleanup(func() {
		cluster.mu.Lock()
		cluster.settings = old
		cluster.mu.Unlock()
	})
}

func FuzzHandles(f *testing.F) {
	key := []byte{0, 0, 0, 1}
	keyN := []byte{0, 0, 0, 1, 0, 0, 0, 1}
	listen, _ := json.Marshal(listenRequest{Seq: 1, Network: "tcp4", Address: "127.0.0.1:0"})
	listening, _ := json.Marshal(Address{Network: "tcp4", Host: "127.0.0.1", Port: 80, Type: TCP4})
	f.Add(fuzzMessage(handleFile, 1, "1\n"), uint8(0), uint16(1))
	f.Add(fuzzMessage(handleConn, 1, "1\n"), uint8(5), uint16(2))
	f.Add(fuzzMessage(handleNone, 0, "1\n"), uint8(0), uint16(1))
	f.Add(fuzzMessage(handleListener, 2, "1\n"), uint8(0), uint16(2))
	f.Add(fuzzMessage(handleKindEnd, 1, "1\n"), uint8(0), uint16(1))
	f.Add(fuzzFrame(frameOnline, 1, nil), uint8(0), uint16(1))
	f.Add(append(fuzzFrame(frameOnline, 0, nil), fuzzFrame(frameOnline, 0, nil)...), uint8(0), uint16(0))
	f.Add(fuzzFrame(frameListen, 0, listen), uint8(0), uint16(0))
	f.Add(fuzzFrame(frameListening, 0, listening), uint8(7), uint16(0))
	f.Add(fuzzFrame(frameDemand, 0, keyN), uint8(0), uint16(0))
	f.Add(fuzzFrame(frameUnlisten, 0, key), uint8(0), uint16(0))
	f.Add(fuzzFrame(frameExitedAfterDisconnect, 0, nil), uint8(0), uint16(0))
	f.Add(append(fuzzFrame(frameOnline, 0, []byte{0, 0, 0, protocolVersion}), fuzzFrame(frameAdopt, 2, key)...), uint8(0), uint16(2))
	f.Add(append(fuzzFrame(frameOnline, 0, []byte{0, 0, 0, protocolVersion}), fuzzFrame(frameAdopt, 0, key)...), uint8(0), uint16(0))
	fuzzRefuseListens(f)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, plan uint16) {
		fds := openFDs(t)
		before := fuzzAllocated()
		tr := &fuzzTransport{data: data, chunk: int(chunk), plan: plan}
		w := fuzzWorker(tr, JSON)
		var errs []error
		w.OnError(func(err error) { errs = append(errs, err) })
		// As serve does, without the events of a real worker's end.
		err := w.readFrames()
		w.ch.abort(ErrChannelClosed)
		w.ch.reader.close()
		<-w.ch.done
		dropWorker(w)
		fuzzDrain()
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, ErrProtocol) {
			t.Fatalf("reading ended with %v: neither EOF nor a protocol error", err)
		}
		if got := fuzzAllocated() - before; got > fuzzAllocBound(len(data), fuzzMaxFrame) {
			t.Fatalf("reading %d bytes allocated %d bytes", len(data), got)
		}
		if got := openFDs(t); got != fds {
			t.Fatalf("%d descriptors open after the worker's stream, %d before", got, fds)
		}
	})
}

// fuzzTyped is what the fuzzed messages are decoded into, besides any.
type fuzzTyped struct {
	A string
	B []int
	C map[string]float64
	D *struct{ X []byte }
}

// fuzzMessageBody runs a message body through the primary's path for
// messages (check, then the handlers), twice, as two messages with the same
// types (with Gob the second may be checked and decoded by a decoder kept
// from the first), and checks that what the check lets through decodes,
// what it refuses does not, and that both come out as the body checked and
// decoded on its own.
func fuzzMessageBody(t *testing.T, codec Serialization, body []byte) {
	before := fuzzAllocated()
	tr := &fuzzTransport{}
	w := fuzzWorker(tr, codec)
	var got []Message
	w.OnMessage(func(m Message) { got = append(got, m) })
	var errs []error
	w.OnError(func(err error) { errs = append(errs, err) })
	for range 2 {
		if err := w.deliverMessage(frame{kind: frameMessage, body: append([]byte{byte(handleNone)}, body...)}); err != nil {
			t.Fatalf("a message that is not a protocol violation closed the channel: %v", err)
		}
	}
	fuzzDrain()
	w.ch.abort(ErrChannelClosed)
	<-w.ch.done
	checkBound := 2 * fuzzAllocBound(len(body), 0)
	if codec == Gob {
		// gob sizes the slices of a type definition by the length they
		// claim, up to 10 MiB (its own limit), even when it decodes into
		// nothing: a few bytes can cost that much, once, transiently.
		checkBound += 2 * gobClaimLimit
	}
	if n := fuzzAllocated() - before; n > checkBound {
		t.Fatalf("the primary allocated %d bytes for two messages of %d bytes", n, len(body))
	}
	checkErr := codec.check(body)
	switch {
	case checkErr == nil && len(got) != 2:
		t.Fatalf("a valid message was not delivered (%d messages, errors %v)", len(got), errs)
	case checkErr != nil && (len(got) != 0 || len(errs) == 0 || w.stats.messagesDropped.Load() != 2):
		// The second is reported with the first if its event has not run.
		t.Fatalf("an invalid message: %d delivered, %d error events, %d counted as dropped", len(got), len(errs), w.stats.messagesDropped.Load())
	}
	// What handlers do with a message that was delivered, against the
	// message decoded on its own.
	before = fuzzAllocated()
	var decErr error
	for i, m := range got {
		for _, target := range []func() any{func() any { return new(fuzzTyped) }, func() any { return new(any) }} {
			v, alone := target(), target()
			err := m.Decode(v)
			errAlone := codec.decode(body, alone)
			if (err == nil) != (errAlone == nil) {
				t.Fatalf("message %d into %T: Decode: %v; decoded on its own: %v", i, v, err, errAlone)
			}
			// DeepEqual first: cmp is slow on deep values, and needed only
			// for NaN, which is not equal to itself.
			if err == nil && !reflect.DeepEqual(alone, v) && !cmp.Equal(alone, v, cmpopts.EquateNaNs()) {
				t.Fatalf("message %d into %T (-on its own +Decode):\n%s", i, v, cmp.Diff(alone, v, cmpopts.EquateNaNs()))
			}
			if _, ok := v.(*any); ok && i == 0 {
				decErr = err
			}
		}
	}
	bound := 2 * fuzzAllocBound(len(body), 0)
	if codec == Gob {
		// gob sizes a slice by the length the message claims, up to
		// 10 MiB (its own limit), and fails only once the data runs out.
		bound += 8 * gobClaimLimit
	}
	if n := fuzzAllocated() - before; n > bound {
		t.Fatalf("decoding two messages of %d bytes allocated %d bytes", len(body), n)
	}
	if codec == JSON && checkErr == nil && decErr != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(decErr, &te) { // a number too large for float64
			t.Fatalf("valid JSON does not decode into any: %v", decErr)
		}
	}
	// The check refuses nothing that decodes. (Not so with gob, whose
	// check, gob's own decoding into nothing, is stricter on some malformed
	// interface values than decoding into an interface: such messages are
	// dropped, with an error event.)
	if checkErr != nil && codec == JSON {
		var v any
		if err := codec.decode(body, &v); err == nil {
			t.Fatalf("the check refused a message that decodes: %v", checkErr)
		}
	}
}

func FuzzJSON(f *testing.F) {
	for _, s := range []string{`"hello"`, `{"a":[1,2,3],"b":{"c":null}}`, `1e999`, `[`, `{"A":"x","B":[1],"C":{"k":1.5},"D":{"X":"AAEC"}}`, "\"\xff\"", `[[[[[[[[[[]]]]]]]]]]`} {
		f.Add([]byte(s + "\n"))
	}
	f.Fuzz(func(t *testing.T, body []byte) { fuzzMessageBody(t, JSON, body) })
}

// FuzzJSONCheck compares the arrival check for JSON with json.Valid.
func FuzzJSONCheck(f *testing.F) {
	for _, s := range []string{
		`{"action":"pewpewpew","powerLevel":9001,"data":"xxxxxxxxxxxxxxxxxxxxxxxx"}`,
		`[-0.5e+10,true,false,null,"\u00e9\n",{}]`, "\"01234567\x01\"", "\"0123456\\\"x\"",
		`"\uD83D\uDE00"`, "\"\xff\xfe\"", " \t\r\n[ ] ", `01`, `1.`, `{"a" 1}`, `[1,]`, `[[[[]]]]`,
	} {
		f.Add([]byte(s))
	}
	for _, depth := range []int{jsonMaxDepth, jsonMaxDepth + 1} { // encoding/json's limit
		f.Add([]byte(strings.Repeat("[", depth) + strings.Repeat("]", depth)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, ok := checkJSON(data); ok != json.Valid(data) {
			t.Fatalf("checkJSON(%q) = %v, json.Valid says %v", data, ok, !ok)
		}
	})
}

func FuzzGob(f *testing.F) {
	for _, v := range []any{"hello", 42, []int{1, 2, 3}, map[string]float64{"k": 1.5}, struct {
		A string
		B []int
	}{"x", []int{1}}, fuzzTyped{A: "a", B: []int{1}, C: map[string]float64{"c": 2}, D: &struct{ X []byte }{[]byte("x")}},
		[]any{1, "x", 2.5}} {
		var buf bytes.Buffer
		if err := Gob.encode(&buf, v); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0x07, 0xff, 0x82, 0x01, 0x00, 0x01, 0x02})
	f.Fuzz(func(t *testing.T, body []byte) { fuzzMessageBody(t, Gob, body) })
}

var _ transport = (*fuzzTransport)(nil)
