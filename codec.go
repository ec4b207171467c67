package clusternet

// Shared: the serializations of messages, JSON and Gob, and the check a
// message passes as it arrives.

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Serialization selects how messages are encoded on the channel, as Node's
// settings.serialization does.
type Serialization int

const (
	// JSON encodes messages with encoding/json (Node's "json", the default).
	JSON Serialization = iota
	// Gob encodes messages with encoding/gob, which keeps Go types that JSON
	// loses (Node's "advanced").
	Gob
)

// String returns "json" or "gob".
func (s Serialization) String() string {
	switch s {
	case JSON:
		return "json"
	case Gob:
		return "gob"
	}
	return fmt.Sprintf("Serialization(%d)", int(s))
}

func parseSerialization(s string) (Serialization, error) {
	switch s {
	case "json", "":
		return JSON, nil
	case "gob":
		return Gob, nil
	}
	return 0, fmt.Errorf("clusternet: unknown serialization %q (want json or gob)", s)
}

func (s Serialization) valid() bool { return s == JSON || s == Gob }

// encode appends the encoding of v to dst.
func (s Serialization) encode(dst *bytes.Buffer, v any) error {
	var err error
	switch s {
	case Gob:
		err = gobEncode(dst, v)
	default:
		enc := json.NewEncoder(dst)
		enc.SetEscapeHTML(false)
		err = enc.Encode(v)
	}
	if err != nil {
		return fmt.Errorf("clusternet: encoding message with %v: %w", s, err)
	}
	return nil
}

// check reports whether data is one well-formed value, without knowing its
// Go type, so that a malformed message from a peer is reported when it
// arrives rather than when (or if) a handler decodes it. A gob message is
// checked on its own here; gobDecoders.check checks it with a decoder kept
// for its types.
func (s Serialization) check(data []byte) error {
	switch s {
	case Gob:
		if err := gobFramed(data); err != nil {
			return err
		}
		dec := gob.NewDecoder(bytes.NewReader(data))
		if err := dec.DecodeValue(reflect.Value{}); err != nil { // decodes and discards
			return err
		}
	default:
		if off, ok := checkJSON(data); !ok {
			return fmt.Errorf("invalid JSON at offset %d", off)
		}
	}
	return nil
}

// gobFramed checks that each message of a gob stream lies within data
// before gob reads it: gob allocates up to 10 MiB for a message length
// that data does not back, which a peer could repeat with 5-byte messages.
func gobFramed(data []byte) error {
	for len(data) > 0 {
		// A gob unsigned integer: one byte below 0x80, or the negated
		// count of the big-endian bytes that follow.
		n, width := uint64(data[0]), 1
		if n >= 0x80 {
			width += -int(int8(data[0]))
			if width > 9 || width > len(data) {
				return errors.New("gob: malformed message length")
			}
			n = 0
			for _, b := range data[1:width] {
				n = n<<8 | uint64(b)
			}
		}
		data = data[width:]
		if n > uint64(len(data)) {
			return fmt.Errorf("gob: a message of %d bytes in %d", n, len(data))
		}
		data = data[n:]
	}
	return nil
}

// decode decodes data, a message checked on its own, into v.
func (s Serialization) decode(data []byte, v any) error {
	if s == Gob {
		return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
	}
	return json.Unmarshal(data, v)
}
