package clusternet

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type gobTestInner struct {
	N int
	S []string
	M map[string][2]float64
}

type gobTestList struct {
	V    int
	Next *gobTestList
}

type gobTestMany struct {
	B      *big.Int // a GobEncoder
	T      time.Time
	Raw    []byte
	C      complex128
	U      uint8
	Inner  gobTestInner
	Inners []gobTestInner
	P      **int
	Keys   map[[2]int]*gobTestInner
	hidden any // unexported: gob leaves it out
	Ch     chan int
	Fn     func()
}

type gobTestAny struct {
	Name string
	V    any
}

// gobTestText marshals to text, which gob ignores: its fields are sent.
type gobTestText struct{ V any }

func (gobTestText) MarshalText() ([]byte, error) { return []byte("text"), nil }

// gobTestBinary encodes itself, interface or not, and fails when told to.
type gobTestBinary struct {
	V    any
	Fail bool
}

func (b gobTestBinary) MarshalBinary() ([]byte, error) {
	if b.Fail {
		return nil, errors.New("told to fail")
	}
	return []byte{1}, nil
}

func (b *gobTestBinary) UnmarshalBinary([]byte) error { return nil }

type gobTestWrapper struct {
	gobTestAny // unexported embedded field: gob leaves it out
	Y          int
}

func init() {
	gob.Register(gobTestInner{})
	gob.Register(gobTestAny{})
	gob.Register(map[string]any{})
}

func gobTestValues() []any {
	one := 1
	pone := &one
	list := &gobTestList{1, &gobTestList{2, &gobTestList{3, nil}}}
	return []any{
		"hello", 42, 3.5, []byte("bytes"), true, complex(1, 2), uint(7),
		[]int{1, 2, 3}, []int(nil), [3]string{"a", "b", "c"},
		map[string]int{"a": 1}, map[string]int{}, // one key: gob writes a map in no set order
		gobTestInner{N: 1, S: []string{"x"}, M: map[string][2]float64{"k": {1, 2}}},
		&gobTestInner{N: 2},
		*list, list,
		gobTestMany{B: big.NewInt(12345), T: time.Unix(1e9, 5).UTC(), Raw: []byte{1, 2}, C: 1i, U: 9,
			Inners: []gobTestInner{{N: 3}, {S: []string{"y", "z"}}}, P: &pone,
			Keys: map[[2]int]*gobTestInner{{1, 2}: {N: 4}}, hidden: "not sent"},
		gobTestMany{},
		gobTestAny{Name: "any", V: 1},
		gobTestAny{Name: "nil"},
		map[string]any{"b": map[string]any{"c": []string{"d"}}},
		[]any{1, "two", gobTestInner{N: 3}},
		gobTestText{V: 1},
		gobTestBinary{V: "ignored"},
		gobTestWrapper{Y: 8},
		newBenchPayload(0), newBenchPayload(100),
	}
}

func gobFresh(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		t.Fatalf("gob.Encoder.Encode(%T): %v", v, err)
	}
	return buf.Bytes()
}

// gobEncode writes what a new gob.Encoder writes, byte for byte, whether it
// encodes a type for the first time or with a kept encoder, so that every
// message stands on its own on the channel.
func TestGobEncodeAsNewEncoder(t *testing.T) {
	for _, v := range gobTestValues() {
		want := gobFresh(t, v)
		for i := range 3 {
			var buf bytes.Buffer
			buf.WriteString("prefix")
			if err := gobEncode(&buf, v); err != nil {
				t.Fatalf("%T, time %d: %v", v, i, err)
			}
			if got := buf.Bytes()[len("prefix"):]; !bytes.Equal(got, want) {
				t.Fatalf("%T, time %d:\n got % x\nwant % x", v, i, got, want)
			}
		}
	}
	// The types kept are those without interfaces.
	for _, tc := range []struct {
		v    any
		kept bool
	}{
		{gobTestInner{}, true}, {gobTestList{}, true}, {gobTestMany{}, true}, {gobTestBinary{}, true},
		{gobTestAny{}, false}, {gobTestText{}, false}, {map[string]any{}, false}, {[]any{}, false},
		{gobTestWrapper{}, true}, {benchPayload{}, true}, {"", true},
	} {
		e, _ := gobEncoders.Load(reflect.TypeOf(tc.v))
		if kept := e.(*gobTypeEncoder) != nil; kept != tc.kept {
			t.Errorf("%T: kept encoder %v, want %v", tc.v, kept, tc.kept)
		}
	}
}

// A failed encoding leaves the buffer as it was, and the kept encoder
// fit for the next value; a nil pointer is an error, not a panic.
func TestGobEncodeErrors(t *testing.T) {
	for range 2 {
		var buf bytes.Buffer
		buf.WriteString("prefix")
		if err := gobEncode(&buf, gobTestBinary{Fail: true}); err == nil || !strings.Contains(err.Error(), "told to fail") {
			t.Errorf("encoding a value that fails: %v", err)
		}
		if buf.String() != "prefix" {
			t.Errorf("a failed encoding left %q", buf.String())
		}
		buf.Reset()
		if err := gobEncode(&buf, gobTestBinary{}); err != nil {
			t.Fatal(err)
		}
		if want := gobFresh(t, gobTestBinary{}); !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("after a failure: got % x, want % x", buf.Bytes(), want)
		}
	}
	var buf bytes.Buffer
	if err := gobEncode(&buf, (*gobTestInner)(nil)); err == nil || buf.Len() != 0 {
		t.Errorf("encoding a nil pointer: %v, %d bytes", err, buf.Len())
	}
	if err := gobEncode(&buf, nil); err == nil || buf.Len() != 0 {
		t.Errorf("encoding nil: %v, %d bytes", err, buf.Len())
	}
}

func TestGobPrimer(t *testing.T) {
	if want := gobFresh(t, 0); !bytes.Equal(gobPrimer, want) {
		t.Errorf("gobPrimer is % x, gob encodes int 0 as % x", gobPrimer, want)
	}
}

// gobDecode decodes a message as a handler does, into a new value of the
// type of like.
func gobDecode(m Message, like any) (any, error) {
	p := reflect.New(reflect.TypeOf(like))
	err := m.Decode(p.Interface())
	return p.Elem().Interface(), err
}

// A receiver keeps a decoder for the messages of types without interfaces,
// and decodes every message as a new gob.Decoder would: any number of
// times, in any order, from any goroutine.
func TestGobDecoders(t *testing.T) {
	var in gobDecoders
	values := gobTestValues()
	var msgs []Message
	for round := range 3 {
		for _, v := range values {
			body := gobFresh(t, v)
			gd, err := in.check(body)
			if err != nil {
				t.Fatalf("%T: check: %v", v, err)
			}
			e, _ := gobEncoders.Load(reflect.TypeOf(v))
			if kept := e != nil && e.(*gobTypeEncoder) != nil; (gd != nil) != kept {
				t.Errorf("%T, round %d: kept decoder %v, kept encoder %v", v, round, gd != nil, kept)
			}
			msgs = append(msgs, Message{data: body, codec: Gob, gob: gd})
		}
	}
	decodeAll := func(order []int) error {
		for _, i := range order {
			m, v := msgs[i], values[i%len(values)]
			got, err := gobDecode(m, v)
			want, werr := gobDecode(Message{data: m.data, codec: Gob}, v)
			if err != nil || werr != nil {
				return fmt.Errorf("%T: decoding: %v; on its own: %v", v, err, werr)
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b *big.Int) bool { return a.Cmp(b) == 0 }), cmp.Exporter(func(reflect.Type) bool { return true })); diff != "" {
				return fmt.Errorf("%T (-alone +kept):\n%s", v, diff)
			}
			// Raw is a gob stream of its own.
			if _, err := gobDecode(Message{data: m.Raw(), codec: Gob}, v); err != nil {
				return fmt.Errorf("%T: Raw does not decode: %v", v, err)
			}
		}
		return nil
	}
	var forward, backward []int
	for i := range msgs {
		forward = append(forward, i)
		backward = append(backward, len(msgs)-1-i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, order := range [][]int{forward, backward, forward, backward} {
		wg.Go(func() { errs <- decodeAll(order) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// A decoding that fails leaves the decoder fit for the next.
	i := slices.IndexFunc(values, func(v any) bool { _, ok := v.(gobTestInner); return ok })
	m := msgs[len(values)+i] // a gobTestInner{N: 1} that came second
	if m.gob == nil {
		t.Fatal("no kept decoder for gobTestInner")
	}
	var wrong struct{ N string }
	if err := m.Decode(&wrong); err == nil {
		t.Error("decoding an int into a string succeeded")
	}
	if err := m.Decode(new(int)); err == nil {
		t.Error("decoding a struct into an int succeeded")
	}
	var right gobTestInner
	if err := m.Decode(&right); err != nil || right.N != 1 {
		t.Errorf("after failures: %v, %+v", err, right)
	}
	if err := m.Decode(nil); err != nil {
		t.Errorf("Decode(nil), which discards the value: %v", err)
	}
}

// Messages with type definitions that a kept decoder cannot take are
// checked on their own, as before.
func TestGobDecodersRefuse(t *testing.T) {
	inner := gobFresh(t, gobTestInner{N: 1})
	value, _, ok := gobSplit(inner)
	if !ok || value == 0 {
		t.Fatalf("gobSplit(% x) = %d, %v", inner, value, ok)
	}
	types := inner[:value]
	for _, tc := range []struct {
		name string
		body []byte
		bad  bool // the check fails
	}{
		// A value of an interface type: it could define types.
		{"interface value", append(bytes.Clone(types), 0x03, 0x10, 0x00, 0x00), true},
		// A type the definitions do not define.
		{"undefined type", append(bytes.Clone(types), 0x03, 0xff, 0xfe, 0x00), true},
		// A second value after the first.
		{"two values", append(bytes.Clone(inner), gobPrimer...), false},
		// Definitions alone.
		{"no value", bytes.Clone(types), true},
		// A definition with an interface.
		{"interface type", gobFresh(t, gobTestAny{Name: "x"}), false},
		// An array whose element type is left out, id 0 (FuzzGob: a kept
		// decoder made gob panic on its value).
		{"no element type", []byte("\x0b\x7f\x01\x01\x02\xff0\x00\x020\x00\x00\a\xff\x80\x000000"), true},
	} {
		var in gobDecoders
		in.check(inner) // keeps a decoder for types
		gd, err := in.check(tc.body)
		if gd != nil {
			t.Errorf("%s: checked with a kept decoder", tc.name)
		}
		if (err != nil) != tc.bad {
			t.Errorf("%s: check: %v", tc.name, err)
		}
		if err != nil {
			continue
		}
		if err2 := Gob.check(tc.body); err2 != nil {
			t.Errorf("%s: the check on its own fails: %v", tc.name, err2)
		}
	}
}

// The decoders one channel keeps are bounded in number.
func TestGobDecodersBound(t *testing.T) {
	var in gobDecoders
	for i := range gobMaxDecoders + 5 {
		typ := reflect.StructOf([]reflect.StructField{{Name: fmt.Sprintf("F%d", i), Type: reflect.TypeFor[int]()}})
		v := reflect.New(typ).Elem()
		v.Field(0).SetInt(int64(i))
		body := gobFresh(t, v.Interface())
		gd, err := in.check(body)
		if err != nil {
			t.Fatal(err)
		}
		if kept := i < gobMaxDecoders; (gd != nil) != kept {
			t.Fatalf("type %d: kept decoder %v, want %v", i, gd != nil, kept)
		}
		got := reflect.New(typ)
		if err := (Message{data: body, codec: Gob, gob: gd}).Decode(got.Interface()); err != nil || got.Elem().Field(0).Int() != int64(i) {
			t.Fatalf("type %d: %v, %v", i, err, got.Elem())
		}
	}
}

// gobTypeIDs accepts what gob writes for types without interfaces, and
// nothing truncated.
func TestGobTypeIDs(t *testing.T) {
	// An array type whose element type is left out: id 0, no type.
	if _, ok := gobTypeIDs([]byte("\x0b\x7f\x01\x01\x02\xff0\x00\x020\x00\x00")); ok {
		t.Error("a definition without its element type accepted")
	}
	for _, v := range gobTestValues() {
		body := gobFresh(t, v)
		free := gobInterfaceFree(reflect.TypeOf(v), map[reflect.Type]bool{})
		value, _, ok := gobSplit(body)
		if !ok {
			// An interface value can carry definitions, and gob writes
			// them in messages of their own amid the value's.
			if free {
				t.Errorf("%T: gobSplit fails", v)
			}
			continue
		}
		types := body[:value]
		if _, ok := gobTypeIDs(types); ok != free && value > 0 {
			t.Errorf("%T: definitions accepted %v, want %v", v, ok, free)
		}
		boundary := map[int]bool{}
		for off := 0; off < len(types); {
			r := gobReader{b: types[off:]}
			n := r.uint()
			off = len(types) - len(r.b) + int(n)
			boundary[off] = true
		}
		for i := 1; i < len(types); i++ {
			if _, ok := gobTypeIDs(types[:i]); ok && !boundary[i] {
				t.Errorf("%T: definitions cut at %d of %d bytes accepted", v, i, len(types))
			}
		}
	}
}

func init() {
	// gob-stream answers every pmPayload with the payload, a type whose
	// messages kept decoders take, and with a map of interfaces, which is
	// decoded on its own.
	helpers["gob-stream"] = func() {
		Self().OnMessage(func(m Message) {
			var p, again pmPayload
			if err := m.Decode(&p); err != nil {
				Self().Send(map[string]any{"error": err.Error()})
				return
			}
			if err := m.Decode(&again); err != nil || again.N != p.N {
				Self().Send(map[string]any{"error": fmt.Sprintf("decoding again: %v, %d", err, again.N)})
				return
			}
			Self().Send(p)
			Self().Send(map[string]any{"n": p.N, "kept": m.gob != nil})
		})
		select {}
	}
}

// Messages of one type go both ways between processes, each checked and
// decoded by a kept decoder, among messages that are not.
func TestGobMessagesBetweenProcesses(t *testing.T) {
	withSettings(t, Settings{Serialization: Gob})
	w := fork(t, "gob-stream")
	in := messages(w)
	for i := range 20 {
		sent := pmPayload{Name: "p", N: int64(i), Tags: []string{strings.Repeat("t", i)}, M: map[string]int{"i": i}, Inner: &pmInner{X: i}}
		if i%5 == 4 {
			sent.B = bytes.Repeat([]byte{byte(i)}, 100<<10) // larger than a frame reader's buffer
		}
		if err := w.Send(sent); err != nil {
			t.Fatal(err)
		}
		m := recv(t, in, "the payload")
		var got pmPayload
		if err := m.Decode(&got); err != nil {
			var e map[string]any
			m.Decode(&e)
			t.Fatalf("message %d: %v (the worker says %v)", i, err, e)
		}
		if diff := cmp.Diff(sent, got); diff != "" {
			t.Fatalf("message %d (-sent +got):\n%s", i, diff)
		}
		if m.gob == nil {
			t.Errorf("message %d: no kept decoder for a pmPayload", i)
		}
		m = recv(t, in, "the map")
		var info map[string]any
		if err := m.Decode(&info); err != nil || info["n"] != int64(i) || info["kept"] != true {
			t.Fatalf("message %d: %v, %v; want n %d and kept true", i, err, info, i)
		}
		if m.gob != nil {
			t.Errorf("message %d: a kept decoder for a map of interfaces", i)
		}
	}
}
