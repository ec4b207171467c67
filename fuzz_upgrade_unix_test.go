//go:build unix

package clusternet

// FuzzHandover: what a new primary reads from the old one during an
// upgrade (readHandover), from any byte stream with descriptors arriving
// anywhere in it. The old primary is this one's parent and trusted more
// than a worker, but a truncated or mismatched handover (another build)
// must still end in an error: no panic, no descriptor left open, memory
// bounded by the frame limit.

import (
	"encoding/json"
	"errors"
	"io"
	"testing"
)

func FuzzHandover(f *testing.F) {
	frame := func(kind frameKind, handles int, v any) []byte {
		body, _ := json.Marshal(v)
		if s, ok := v.(string); ok {
			body = []byte(s)
		}
		return fuzzFrame(kind, handles, body)
	}
	state := frame(upgradeState, 0, handoverState{Want: []string{"tcp4:127.0.0.1:8000"}})
	rr := frame(upgradeSockets, 1, handedAddr{ID: "tcp4|127.0.0.1:8000", Mode: modeRR, BoundAt: "tcp4:127.0.0.1:8000"})
	file := frame(upgradeSockets, 2, handedAddr{ID: "unix|/run/a.sock", Mode: modeRR, File: &handedFile{Name: "a.sock", Dev: 1, Ino: 2}})
	own := frame(upgradeSockets, 3, handedAddr{ID: "tcp4|:0", Mode: modeOwn, Address: "127.0.0.1:9", BoundAt: "tcp4:127.0.0.1:9"})
	act := frame(upgradeSockets, 1, handedAddr{Activation: "web"})
	f.Add(append(append([]byte(nil), rr...), state...), uint8(0), uint16(1))
	f.Add(append(append(append([]byte(nil), file...), own...), state...), uint8(0), uint16(2|3<<2))
	f.Add(append(append(append([]byte(nil), own...), own...), state...), uint8(7), uint16(3|3<<2))
	f.Add(append(append([]byte(nil), act...), state...), uint8(0), uint16(1))
	f.Add(append(append([]byte(nil), rr...), rr...), uint8(0), uint16(1|1<<2))
	f.Add(frame(upgradeRefused, 0, "another version"), uint8(0), uint16(0))
	f.Add(frame(upgradeCommit, 0, nil), uint8(0), uint16(0))
	f.Add(frame(upgradeSockets, 1, `{"id":"x","mode":"own","file":{"name":".."}}`), uint8(0), uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, plan uint16) {
		fds := openFDs(t)
		before := fuzzAllocated()
		tr := &fuzzTransport{data: data, chunk: int(chunk), plan: plan}
		ch := newChannel(tr, maxUpgradeFrame)
		ch.reader.end = upgradeKindEnd
		h, err := readHandover(ch)
		if err == nil {
			h.close()
			ch.reader.close()
		} else if !errors.Is(err, io.EOF) && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrVersion) {
			// Socket activation's socket on a descriptor that is no socket.
			if h != nil {
				t.Fatalf("readHandover returned both %v and what it read", err)
			}
		}
		ch.abort(ErrChannelClosed)
		<-ch.done
		if got := fuzzAllocated() - before; got > fuzzAllocBound(len(data), maxUpgradeFrame) {
			t.Fatalf("reading %d bytes allocated %d bytes", len(data), got)
		}
		if got := openFDs(t); got != fds {
			t.Fatalf("%d descriptors open after the handover's stream, %d before", got, fds)
		}
	})
}
