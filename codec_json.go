package clusternet

// Shared: the JSON arrival check, which accepts what json.Valid accepts,
// skipping string contents 8 bytes at a time.

import (
	"encoding/binary"
	"math/bits"
)

// jsonMaxDepth is encoding/json's limit on nested arrays and objects.
const jsonMaxDepth = 10000

// checkJSON reports whether data is one JSON value, with optional white
// space around it, exactly as json.Valid does: strings are not checked for
// valid UTF-8 and lone surrogate escapes are accepted, as json.Unmarshal
// replaces both with U+FFFD. On failure it also returns the offset at which
// it found data invalid (len(data) if data ends too early).
//
// It exists because every message is checked when it arrives: json.Valid
// steps its state machine through a function call per byte, which for long
// strings costs as much as decoding them; this checker skips over string
// contents eight bytes at a time.
func checkJSON(data []byte) (int, bool) {
	// isObject[d/64] bit d%64 says whether the container at depth d is an
	// object: an array on the stack, so that checking never allocates.
	var isObject [(jsonMaxDepth + 63) / 64]uint64
	depth := 0
	i := 0
	for {
		// A value starts at i, after white space.
		i = skipJSONSpace(data, i)
		if i == len(data) {
			return i, false
		}
		switch c := data[i]; c {
		case '{', '[':
			if depth == jsonMaxDepth {
				return i, false
			}
			word, bit := depth/64, uint64(1)<<(depth%64)
			if c == '{' {
				isObject[word] |= bit
			} else {
				isObject[word] &^= bit
			}
			depth++
			i = skipJSONSpace(data, i+1)
			if i < len(data) && (c == '{' && data[i] == '}' || c == '[' && data[i] == ']') {
				depth--
				i++
				break // an empty container is a complete value
			}
			if c == '{' {
				var ok bool
				if i, ok = checkJSONKey(data, i); !ok {
					return i, false
				}
			}
			continue
		case '"':
			var ok bool
			if i, ok = checkJSONString(data, i+1); !ok {
				return i, false
			}
		case 't':
			if !hasJSONLiteral(data, i, "true") {
				return i, false
			}
			i += len("true")
		case 'f':
			if !hasJSONLiteral(data, i, "false") {
				return i, false
			}
			i += len("false")
		case 'n':
			if !hasJSONLiteral(data, i, "null") {
				return i, false
			}
			i += len("null")
		default:
			var ok bool
			if i, ok = checkJSONNumber(data, i); !ok {
				return i, false
			}
		}
		// A value ended at i: close containers until one continues.
		for {
			i = skipJSONSpace(data, i)
			if depth == 0 {
				return i, i == len(data)
			}
			if i == len(data) {
				return i, false
			}
			object := isObject[(depth-1)/64]>>((depth-1)%64)&1 == 1
			c := data[i]
			if c == ',' {
				i++
				if object {
					i = skipJSONSpace(data, i)
					var ok bool
					if i, ok = checkJSONKey(data, i); !ok {
						return i, false
					}
				}
				break
			}
			if object && c != '}' || !object && c != ']' {
				return i, false
			}
			depth--
			i++
		}
	}
}

func skipJSONSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

func hasJSONLiteral(data []byte, i int, lit string) bool {
	return len(data)-i >= len(lit) && string(data[i:i+len(lit)]) == lit
}

// checkJSONKey checks an object's key and its colon, starting at i, and
// returns the offset after the colon.
func checkJSONKey(data []byte, i int) (int, bool) {
	if i == len(data) || data[i] != '"' {
		return i, false
	}
	i, ok := checkJSONString(data, i+1)
	if !ok {
		return i, false
	}
	i = skipJSONSpace(data, i)
	if i == len(data) || data[i] != ':' {
		return i, false
	}
	return i + 1, true
}

// SWAR constants: a byte repeated in every byte of a word.
const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

// checkJSONString checks a string whose opening quote is just before i and
// returns the offset after its closing quote.
func checkJSONString(data []byte, i int) (int, bool) {
	for {
		// Skip eight bytes at a time while none is a quote, a backslash or
		// a control character. Each test sets the high bit of the bytes it
		// matches, exactly for the first match (a borrow only propagates
		// upwards), so the lowest set bit locates the first special byte.
		for len(data)-i >= 8 {
			x := binary.LittleEndian.Uint64(data[i:])
			quote := x ^ swarOnes*'"'
			backslash := x ^ swarOnes*'\\'
			special := (x-swarOnes*0x20)&^x |
				(quote-swarOnes)&^quote |
				(backslash-swarOnes)&^backslash
			special &= swarHighs
			if special != 0 {
				i += bits.TrailingZeros64(special) / 8
				break
			}
			i += 8
		}
		if i == len(data) {
			return i, false
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			i++
			if i == len(data) {
				return i, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				i++
				for range 4 {
					if i == len(data) || !isHexDigit(data[i]) {
						return i, false
					}
					i++
				}
			default:
				return i, false
			}
		case c < 0x20:
			return i, false
		default:
			i++
		}
	}
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// checkJSONNumber checks a number starting at i and returns the offset after it.
func checkJSONNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i == len(data):
		return i, false
	case data[i] == '0':
		i++
	case '1' <= data[i] && data[i] <= '9':
		i = skipDigits(data, i+1)
	default:
		return i, false
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i == len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = skipDigits(data, i+1)
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i == len(data) || !isDigit(data[i]) {
			return i, false
		}
		i = skipDigits(data, i+1)
	}
	return i, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func skipDigits(data []byte, i int) int {
	for i < len(data) && isDigit(data[i]) {
		i++
	}
	return i
}
