package clusternet

import (
	"encoding/json"
	"strings"
	"testing"
)

// checkJSON must agree with json.Valid on every input; FuzzJSONCheck
// searches for disagreements, these are the edges.
func TestCheckJSONEdges(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	deepObj := func(n int) string {
		return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat("}", n-1)
	}
	long := strings.Repeat("x", 100)
	for _, s := range []string{
		// Empty and white space.
		"", " ", "\n", " \t\r\n1 \t\r\n", "\v1", "1\f", "\u00a01",
		// Literals.
		"true", "false", "null", "tru", "truex", "nul", "nulll", "True", "NULL", "[true,false,null]", "[truefalse]",
		// Numbers.
		"0", "-0", "01", "-01", "1", "-", "--1", "+1", "123456789", "1.", "1.5", ".5", "1.5.5",
		"1e", "1e5", "1E5", "1e+5", "1e-5", "1e+", "1e-", "1ee5", "-1.5e-10", "0.0e0", "1e5.5",
		"0x10", "1_000", "1 2", "[1 2]", "[-]", "[1,]", "Infinity", "NaN", "1e999",
		// Strings and escapes.
		`""`, `"`, `"a`, `"\"`, `"\\"`, `"\/"`, `"\b\f\n\r\t"`, `"\a"`, `"\x41"`, `"\'"`,
		`"\u0041"`, `"\u00e9"`, `"\uABCD"`, `"\uabcd"`, `"\u12"`, `"\u12G4"`, `"\u"`, `"\U0041"`,
		`"\uD800"`, `"\uDC00"`, `"\uD83D\uDE00"`, `"\uDE00\uD83D"`,
		"\"\x00\"", "\"\x1f\"", "\"\x7f\"", "\"\t\"", "\"\n\"",
		// UTF-8 is not checked, as json.Valid does not.
		"\"\xff\"", "\"\xc3\xa9\"", "\"\xed\xa0\x80\"", "\"\xe2\x82\"", "\xff",
		// The eight-byte skip, with the special byte in every position.
		`"` + long + `"`, `"` + long, `"` + long + `\`, `"` + long + `\"`,
		`"01234567"`, `"0123456"`, `"012345678"`, `"0123456\"7"`, "\"0123456\x01\"",
		"\"01234\"\x0067\"", `"0123456\\"`, `"\u0041\u0042\u0043\u0044"`,
		// Arrays and objects.
		"[]", "[ ]", "[", "]", "[[]", "[]]", "[1,2,3]", "[,1]", "[1,,2]", `[1,"a",[],{}]`,
		"{}", "{ }", "{", "}", `{"a":1}`, `{"a" : 1 , "b" : [ ] }`, `{"a"}`, `{"a":}`, `{"a":1,}`,
		`{,"a":1}`, `{1:1}`, `{a:1}`, `{"a":1 "b":2}`, `{"a"::1}`, `{"a":1]`, `[1}`, `{"a":[}]}`,
		`{"a":{"b":{"c":[1,{"d":null}]}}}`, `{"":""}`,
		// Trailing data.
		"1 1", `{}{}`, `[]x`, `"a"b`, "1\n", "{} ", "null,",
		// Depth: encoding/json allows 10000.
		deep(jsonMaxDepth), deep(jsonMaxDepth + 1), deepObj(jsonMaxDepth), deepObj(jsonMaxDepth + 1),
		strings.Repeat("[", jsonMaxDepth),
	} {
		want := json.Valid([]byte(s))
		if _, got := checkJSON([]byte(s)); got != want {
			t.Errorf("checkJSON(%.40q) = %v, json.Valid says %v", s, got, want)
		}
	}
}

// Every string of up to three bytes over an alphabet of JSON's syntax
// agrees with json.Valid.
func TestCheckJSONShortInputs(t *testing.T) {
	alphabet := []byte(" \t0123456789-+.eE\"\\u{}[],:tfnrlsa\x00\x1f\xff")
	var buf []byte
	var try func(n int)
	try = func(n int) {
		if _, got := checkJSON(buf); got != json.Valid(buf) {
			t.Fatalf("checkJSON(%q) = %v, json.Valid says %v", buf, got, !got)
		}
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			buf = append(buf, c)
			try(n - 1)
			buf = buf[:len(buf)-1]
		}
	}
	try(3)
}

// The offset of a failure is within the input.
func TestCheckJSONOffset(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`{"a":1,}`, 7},
		{`[1,2`, 4},
		{"\"ab\x01\"", 3},
		{`1 x`, 2},
	} {
		off, ok := checkJSON([]byte(tc.in))
		if ok || off != tc.want {
			t.Errorf("checkJSON(%q) = %d, %v; want %d, false", tc.in, off, ok, tc.want)
		}
	}
}

func BenchmarkCheckJSON(b *testing.B) {
	for _, sz := range benchSizes {
		f, err := encodeMessage(JSON, newBenchPayload(sz.size), nil)
		if err != nil {
			b.Fatal(err)
		}
		body := f.b[frameHeaderLen+1:]
		b.Run("checkJSON/"+sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, ok := checkJSON(body); !ok {
					b.Fatal("invalid")
				}
			}
		})
		b.Run("json.Valid/"+sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if !json.Valid(body) {
					b.Fatal("invalid")
				}
			}
		})
	}
}
