package clusternet

// Shared: Gob messages, each decodable on its own, with decoders kept per
// channel for a repeated run of type definitions.

import (
	"bytes"
	"encoding"
	"encoding/gob"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
)

// Every gob message on the channel is a complete gob stream: the definitions
// of the types the value needs, then the value. Decoding each with a new
// gob.Decoder costs far more than the value: the decoder parses the
// definitions and compiles a decoding engine for them and for the value's
// type, once for the arrival check and again for Message.Decode. A message
// of a type without interfaces, however, comes with the same definitions
// every time (gob defines exactly the types that a value of that type can
// contain), so one decoder, primed with those definitions, decodes every
// later value of that type, with engines it keeps.
//
// gobDecoders keeps those decoders for one channel (type ids are the
// sending process's own): a gobDecoder per distinct run of definitions, if
// the definitions parse and refer to no interface type, so that decoding a
// value can never define more types (a gob interface value may carry type
// definitions inside it) and the decoder's state stays the definitions'.
// Every other message is checked and decoded on its own, as before.
type gobDecoders struct {
	mu       sync.Mutex
	byTypes  map[string]*gobDecoder // by the definitions, byte for byte
	keyBytes int                    // the keys' total length
}

// Bounds on what one channel's decoders keep: a peer that sends many
// distinct definitions cannot grow them; messages beyond the bounds are
// decoded on their own.
const (
	gobMaxDecoders  = 64
	gobMaxTypeBytes = 1 << 20 // definitions, all decoders together
)

// gobRetain is the largest message that a decoder keeps once decoded: gob
// holds the last message it read until it reads the next, and a larger one
// is replaced with gobPrimer so that its memory is not kept.
const gobRetain = 64 << 10

// gobDecoder decodes the values of messages that come with one run of type
// definitions, which its decoders have already read.
type gobDecoder struct {
	types  int            // the definitions' length: the value starts there
	ids    map[int32]bool // the type ids the definitions define
	check  gobStream
	decode gobStream
}

// gobStream is a gob.Decoder fed one message at a time.
type gobStream struct {
	mu  sync.Mutex
	in  bytes.Reader // a ByteReader: gob reads no further than a message
	dec *gob.Decoder
}

// gobPrimer is a gob message holding int 0: a value to decode after the
// definitions, so that the decoders read those before any message's value.
var gobPrimer = []byte{0x03, 0x04, 0x00, 0x00}

// check checks a message that arrived with its type definitions and
// returns the decoder that decodes it, or nil if the message must be
// decoded on its own (Serialization.decode).
func (c *gobDecoders) check(data []byte) (*gobDecoder, error) {
	if err := gobFramed(data); err != nil {
		return nil, err
	}
	value, id, ok := gobSplit(data)
	var d *gobDecoder
	if ok {
		d = c.decoder(data[:value])
	}
	if d == nil || !d.defines(id) {
		return nil, Gob.check(data)
	}
	if err := d.check.value(data[value:], nil); err != nil {
		return nil, err
	}
	return d, nil
}

// decoder returns the decoder for a run of type definitions, making it if
// need be, or nil if they cannot have one.
func (c *gobDecoders) decoder(types []byte) *gobDecoder {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.byTypes[string(types)]; d != nil {
		return d
	}
	if len(c.byTypes) >= gobMaxDecoders || c.keyBytes+len(types) > gobMaxTypeBytes {
		return nil
	}
	ids, ok := gobTypeIDs(types)
	if !ok {
		return nil
	}
	d := &gobDecoder{types: len(types), ids: ids}
	// Both decoders read the definitions now: if they do not decode, the
	// message is checked on its own, which reports why.
	if d.check.prime(types) != nil || d.decode.prime(types) != nil {
		return nil
	}
	if c.byTypes == nil {
		c.byTypes = make(map[string]*gobDecoder)
	}
	c.byTypes[string(types)] = d
	c.keyBytes += len(types)
	return d
}

// defines reports whether a value of type id decodes with d: a basic type
// or one of the definitions, not an interface.
func (d *gobDecoder) defines(id int32) bool {
	return gobBasicType(id) || d.ids[id]
}

// decodeMessage decodes data, a message that d checked, into v.
func (d *gobDecoder) decodeMessage(data []byte, v any) error {
	return d.decode.value(data[d.types:], v)
}

// prime makes the stream's decoder and has it read the type definitions.
func (s *gobStream) prime(types []byte) error {
	s.dec = gob.NewDecoder(&s.in)
	return s.value(append(types[:len(types):len(types)], gobPrimer...), nil)
}

// value decodes msg, one gob message holding a value, into v (nil: checks
// it and discards the value).
func (s *gobStream) value(msg []byte, v any) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dec == nil {
		return errGobBroken
	}
	defer func() {
		// encoding/gob panics on some malformed input (FuzzGob found a
		// nil dereference in ignoreSingle, for an array of element type
		// id 0, which gobTypeIDs now refuses): that is a malformed
		// message, and the decoder, in no known state, decodes nothing
		// more. Only the peer that sent it loses: the decoders are its
		// channel's.
		if p := recover(); p != nil {
			s.dec = nil
			s.in.Reset(nil)
			err = fmt.Errorf("%w (%v)", errGobBroken, p)
		}
	}()
	s.in.Reset(msg)
	err = s.dec.Decode(v)
	if len(msg) > gobRetain {
		s.in.Reset(gobPrimer)
		s.dec.DecodeValue(reflect.Value{})
	}
	s.in.Reset(nil) // what an error left unread must not precede the next message
	return err
}

var errGobBroken = errors.New("gob: malformed message: encoding/gob failed on it")

// gob's predefined type ids: bool, int, uint, float, []byte, string and
// complex, 1 to 7; then interface, the types of its own definitions, and
// from 64 a user's types.
const (
	gobTypeBool      = 1
	gobTypeComplex   = 7
	gobFirstUserType = 64
)

func gobBasicType(id int32) bool { return gobTypeBool <= id && id <= gobTypeComplex }

// gobSplit splits data, a well-framed gob stream (gobFramed), into type
// definitions and the value that follows them. It returns the offset and
// type id of the value, and false unless data is definitions followed by
// one value, as a new gob.Encoder writes one value.
func gobSplit(data []byte) (value int, id int32, ok bool) {
	for off := 0; off < len(data); {
		r := gobReader{b: data[off:]}
		n := r.uint()
		if r.bad || n > uint64(len(r.b)) {
			return 0, 0, false
		}
		msg := gobReader{b: r.b[:n]}
		id := int32(msg.int()) // as gob reads it: a type id is an int32
		if msg.bad {
			return 0, 0, false
		}
		next := len(data) - len(r.b) + int(n)
		if id >= 0 {
			return off, id, next == len(data)
		}
		off = next
	}
	return 0, 0, false
}

// gobTypeIDs parses a run of type definitions, and returns the ids they
// define if every type they refer to is basic or among them: none is, or
// contains, an interface or a type defined elsewhere.
func gobTypeIDs(types []byte) (map[int32]bool, bool) {
	ids := make(map[int32]bool)
	var refs []int32
	for len(types) > 0 {
		r := gobReader{b: types}
		n := r.uint()
		if r.bad || n > uint64(len(r.b)) {
			return nil, false
		}
		msg := gobReader{b: r.b[:n]}
		types = r.b[n:]
		id := -int64(int32(msg.int()))
		if id < gobFirstUserType || id > math.MaxInt32 {
			return nil, false
		}
		refs = msg.wireType(refs)
		if msg.bad || len(msg.b) > 0 {
			return nil, false
		}
		if ids[int32(id)] {
			return nil, false // gob refuses a second definition
		}
		ids[int32(id)] = true
	}
	for _, ref := range refs {
		if !gobBasicType(ref) && !ids[ref] {
			return nil, false
		}
	}
	return ids, true
}

// gobReader reads gob's encoding of a type definition, as encoding/gob
// decodes it into its wireType, far enough to collect the type ids it
// refers to. Any error sets bad.
type gobReader struct {
	b   []byte
	bad bool
}

func (r *gobReader) uint() uint64 {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	if c <= 0x7f {
		return uint64(c)
	}
	n := -int(int8(c))
	if n > 8 || n > len(r.b) {
		r.bad = true
		return 0
	}
	var x uint64
	for _, c := range r.b[:n] {
		x = x<<8 | uint64(c)
	}
	r.b = r.b[n:]
	return x
}

func (r *gobReader) int() int64 {
	x := r.uint()
	if x&1 != 0 {
		return ^int64(x >> 1)
	}
	return int64(x >> 1)
}

// typeID reads a reference to a type, as gob does into an int32.
func (r *gobReader) typeID() int32 {
	x := r.int()
	if x < math.MinInt32 || x > math.MaxInt32 {
		r.bad = true
	}
	return int32(x)
}

func (r *gobReader) skipString() {
	n := r.uint()
	if n > uint64(len(r.b)) {
		r.bad = true
		return
	}
	r.b = r.b[n:]
}

// fields reads a struct of nfields fields, calling field for each field
// present; as gob does, a struct ends with a zero delta or with the data.
func (r *gobReader) fields(nfields int, field func(i int)) {
	for i := -1; len(r.b) > 0 && !r.bad; {
		delta := r.uint()
		if delta == 0 {
			return
		}
		if delta > uint64(nfields-1-i) {
			r.bad = true
			return
		}
		i += int(delta)
		field(i)
	}
}

// wireType reads gob's wireType, one of whose fields says what kind of type
// is defined, and appends the ids it refers to to refs. A reference left
// out is id 0, which gob writes for no type at all: only a broken peer
// sends one, and refs has it so that the definitions are refused.
func (r *gobReader) wireType(refs []int32) []int32 {
	kinds := 0
	r.fields(7, func(i int) {
		kinds++
		switch i {
		case 0: // ArrayT: CommonType, Elem, Len
			var elem int32
			r.fields(3, func(i int) {
				switch i {
				case 0:
					r.commonType()
				case 1:
					elem = r.typeID()
				case 2:
					r.int()
				}
			})
			refs = append(refs, elem)
		case 1: // SliceT: CommonType, Elem
			var elem int32
			r.fields(2, func(i int) {
				if i == 0 {
					r.commonType()
				} else {
					elem = r.typeID()
				}
			})
			refs = append(refs, elem)
		case 2: // StructT: CommonType, Field []fieldType{Name, Id}
			r.fields(2, func(i int) {
				if i == 0 {
					r.commonType()
					return
				}
				n := r.uint()
				if n > uint64(len(r.b)) { // each field takes a byte at least
					r.bad = true
					return
				}
				for range n {
					var id int32
					r.fields(2, func(i int) {
						if i == 0 {
							r.skipString()
						} else {
							id = r.typeID()
						}
					})
					refs = append(refs, id)
				}
			})
		case 3: // MapT: CommonType, Key, Elem
			var key, elem int32
			r.fields(3, func(i int) {
				switch i {
				case 0:
					r.commonType()
				case 1:
					key = r.typeID()
				case 2:
					elem = r.typeID()
				}
			})
			refs = append(refs, key, elem)
		default: // GobEncoderT, BinaryMarshalerT, TextMarshalerT: CommonType
			r.fields(1, func(int) { r.commonType() })
		}
	})
	if kinds != 1 {
		r.bad = true // gob's decoders would not all agree on what it is
	}
	return refs
}

// commonType reads gob's CommonType: Name, Id.
func (r *gobReader) commonType() {
	r.fields(2, func(i int) {
		if i == 0 {
			r.skipString()
		} else {
			r.typeID()
		}
	})
}

// gobEncoders maps a Go type without interfaces to the *gobTypeEncoder
// that encodes its values, and any other type to nil: for the sender, as
// gobDecoders for the receiver, the type definitions of such a type are the
// same in every message, so they are encoded once, not with every value.
var gobEncoders sync.Map

// gobTypeEncoder encodes the values of one type: an encoder that has sent
// the type's definitions, which it then leaves out, and those definitions,
// which each message starts with.
type gobTypeEncoder struct {
	mu    sync.Mutex
	out   gobOutput
	enc   *gob.Encoder
	types []byte
}

// gobOutput is where a gobTypeEncoder writes: the buffer of the message
// being encoded.
type gobOutput struct{ buf *bytes.Buffer }

func (o *gobOutput) Write(p []byte) (int, error) { return o.buf.Write(p) }

// gobEncode appends to dst v's encoding as a new gob.Encoder writes it:
// the definitions of its types, then the value.
func gobEncode(dst *bytes.Buffer, v any) error {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return gob.NewEncoder(dst).Encode(v) // gob's error for nil
	}
	if rv.Kind() == reflect.Pointer && rv.IsNil() {
		return fmt.Errorf("gob: cannot encode nil pointer of type %v", rv.Type()) // gob panics
	}
	t := rv.Type()
	e, known := gobEncoders.Load(t)
	if !known {
		if !gobInterfaceFree(t, map[reflect.Type]bool{}) {
			gobEncoders.Store(t, (*gobTypeEncoder)(nil))
			return gob.NewEncoder(dst).Encode(v)
		}
		// The first value: its encoding by a new encoder, whose
		// definitions the encoder then leaves out.
		te := &gobTypeEncoder{}
		te.enc = gob.NewEncoder(&te.out)
		start := dst.Len()
		te.out.buf = dst
		err := te.enc.Encode(v)
		te.out.buf = nil
		if err != nil {
			dst.Truncate(start)
			return err
		}
		value, _, ok := gobSplit(dst.Bytes()[start:])
		if ok {
			te.types = bytes.Clone(dst.Bytes()[start : start+value])
			gobEncoders.LoadOrStore(t, te)
		}
		return nil
	}
	te := e.(*gobTypeEncoder)
	if te == nil {
		return gob.NewEncoder(dst).Encode(v)
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	start := dst.Len()
	dst.Write(te.types)
	te.out.buf = dst
	err := te.enc.Encode(v)
	te.out.buf = nil
	if err != nil {
		dst.Truncate(start)
	}
	return err
}

// gobSelfEncoders are the interfaces through which a type encodes itself
// for gob.
var gobSelfEncoders = []reflect.Type{reflect.TypeFor[gob.GobEncoder](), reflect.TypeFor[encoding.BinaryMarshaler]()}

// gobInterfaceFree reports whether gob encodes values of type t without
// interface values: gob sends an interface value's concrete type, and the
// definitions that type needs, with the value. Types in seen are being
// looked at already.
func gobInterfaceFree(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return true
	}
	seen[t] = true
	// A type that encodes itself is sent as its bytes, as gob decides:
	// GobEncoder or BinaryMarshaler (not TextMarshaler), implemented by t,
	// by what t points to (looked at next) or by *t.
	for _, self := range gobSelfEncoders {
		if t.Implements(self) || t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(self) {
			return true
		}
	}
	switch t.Kind() {
	case reflect.Interface:
		return false
	case reflect.Pointer, reflect.Array, reflect.Slice:
		return gobInterfaceFree(t.Elem(), seen)
	case reflect.Map:
		return gobInterfaceFree(t.Key(), seen) && gobInterfaceFree(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			// gob sends exported fields only (and of those, no channel or
			// function, which has no interface in it either).
			if f := t.Field(i); f.IsExported() && !gobInterfaceFree(f.Type, seen) {
				return false
			}
		}
	}
	return true
}
