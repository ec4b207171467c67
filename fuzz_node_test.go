//go:build unix

package clusternet

// FuzzNodeIPC: the primary's whole reading path for a Node worker
// (Settings.NodeIPC): the line reader on any byte stream with descriptors
// arriving anywhere in it, every line's JSON, Node's internal commands and
// the cluster's messages. No input may panic, end the reading with anything
// but EOF or a protocol error, claim more memory than a bound proportional
// to its size and the line limit, leave a descriptor open, or make the
// primary write a line that is not one JSON text (it would kill a real
// worker). .ci/run runs it with the other targets of fuzz_test.go.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
)

// nodeLinesTransport is fuzzTransport that checks what the primary writes:
// whole lines, each one JSON text.
type nodeLinesTransport struct {
	*fuzzTransport
	mu  sync.Mutex
	bad error
}

func (t *nodeLinesTransport) check(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bad != nil {
		return
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.bad = fmt.Errorf("a write that does not end a line: %q", b)
		return
	}
	for _, line := range bytes.Split(b[:len(b)-1], []byte("\n")) {
		if !json.Valid(line) {
			t.bad = fmt.Errorf("the primary wrote a line that is not JSON: %q", line)
			return
		}
	}
}

func (t *nodeLinesTransport) send(b []byte, hs []sysHandle) error {
	t.check(b)
	return nil
}

func (t *nodeLinesTransport) writev(bufs [][]byte) error {
	for _, b := range bufs {
		t.check(b)
	}
	return nil
}

func FuzzNodeIPC(f *testing.F) {
	online := `{"cmd":"NODE_CLUSTER","act":"online","seq":0}` + "\n"
	for _, s := range []string{
		online + `"hello"` + "\n" + `{"cmd":"notifyRequest"}` + "\n",
		online + `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":18000,"addressType":4,"backlog":0,"seq":1}` + "\n",
		online + `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"/tmp/x.sock","port":-1,"addressType":-1,"backlog":0,"seq":1}` + "\n",
		online + `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":0,"addressType":"udp4","flags":4,"seq":1}` + "\n",
		online + `{"cmd":"NODE_CLUSTER","act":"listening","index":0,"data":null,"address":"127.0.0.1","port":18000,"addressType":4,"backlog":0,"seq":2}` + "\n",
		online + `{"cmd":"NODE_CLUSTER","act":"close","key":"1","seq":3}` + "\n",
		online + `{"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":4}` + "\n",
		online + `{"cmd":"NODE_CLUSTER","ack":1,"accepted":true,"seq":5}` + "\n",
		online + `{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"a":1}}` + "\n",
		online + `{"cmd":"NODE_HANDLE_ACK"}` + "\n" + `{"cmd":"NODE_HANDLE_NACK"}` + "\n",
		online + "{not json\n" + `{"cmd":"NODE_X"}` + "\n" + `{"cmd":7}` + "\n",
		online + `"unterminated`,
	} {
		f.Add([]byte(s), uint8(0), uint16(0))
		f.Add([]byte(s), uint8(7), uint16(0x5555))
	}
	fuzzRefuseListens(f)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, plan uint16) {
		fds := openFDs(t)
		before := fuzzAllocated()
		tr := &nodeLinesTransport{fuzzTransport: &fuzzTransport{data: data, chunk: int(chunk), plan: plan}}
		w := fuzzWorker(tr, JSON)
		w.online = false // the stream starts as a Node worker's does
		w.node = newNodeWorker(w, &Settings{MaxMessageSize: fuzzMaxFrame - 1})
		var errs []error
		w.OnError(func(err error) { errs = append(errs, err) })
		// As serve does, without the events of a real worker's end.
		err := w.node.read()
		w.ch.abort(ErrChannelClosed)
		<-w.ch.done
		w.node.shutdown()
		w.node.lr.close()
		dropWorker(w)
		fuzzDrain()
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, ErrProtocol) {
			t.Fatalf("reading ended with %v: neither EOF nor a protocol error", err)
		}
		if got := fuzzAllocated() - before; got > fuzzAllocBound(len(data), fuzzMaxFrame) {
			t.Fatalf("reading %d bytes allocated %d bytes", len(data), got)
		}
		if tr.bad != nil {
			t.Fatal(tr.bad)
		}
		if got := openFDs(t); got != fds {
			t.Fatalf("%d descriptors open after the worker's stream, %d before", got, fds)
		}
	})
}
