package clusternet

// Shared: the wire format of Node.js's IPC channel in its "json" mode, as
// a Node worker speaks it to a primary forked with Settings.NodeIPC: one
// JSON text per line, handles beside the bytes (SCM_RIGHTS), and the reader
// that splits the stream into lines and pairs handles with the lines that
// announce them the way Node's own reader does. The protocol, checked
// against Node v20, is described in docs/node-workers.md; the primary's side
// of it is primary_node.go.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
)

// maxNodePendingHandles bounds the handles a Node worker may have sent ahead
// of the NODE_HANDLE lines that claim them. Node sends one at a time and
// waits for the answer (NODE_HANDLE_ACK), so one is all a well-behaved
// worker ever has pending; the rest is slack for a line that is still being
// read.
const maxNodePendingHandles = 4

// nodeLineReader splits a Node channel's byte stream into lines and keeps
// the handles that arrived with them. Node pairs a handle with the next
// NODE_HANDLE line parsed, whatever read brought it (lib/internal/
// child_process.js: channel.pendingHandle); takeHandle does the same.
type nodeLineReader struct {
	t       transport
	max     int // longest line accepted, without its newline
	buf     []byte
	r, w    int // buf[r:w] is read but not yet returned
	long    []byte
	pending []sysHandle
	dropped int // handles closed unclaimed since the last call to droppedHandles
}

func newNodeLineReader(t transport, max int, buf []byte) *nodeLineReader {
	if len(buf) == 0 {
		buf = make([]byte, readBufSize)
	}
	return &nodeLineReader{t: t, max: max, buf: buf}
}

// errNodeLineTooLong is how the reader refuses a line longer than its
// bound: the stream has no other framing to resynchronise on, so the
// channel cannot be read further.
var errNodeLineTooLong = errors.New("line longer than the limit")

// next returns the next line, without its newline. It aliases the reader's
// buffer and is valid until the next call. Errors other than io.EOF leave
// the stream unusable.
func (lr *nodeLineReader) next() ([]byte, error) {
	lr.long = lr.long[:0]
	for {
		if i := bytes.IndexByte(lr.buf[lr.r:lr.w], '\n'); i >= 0 {
			line := lr.buf[lr.r : lr.r+i]
			lr.r += i + 1
			if len(lr.long) > 0 {
				if len(lr.long)+len(line) > lr.max {
					return nil, protocolErrorf("%w of %d bytes (Settings.MaxMessageSize)", errNodeLineTooLong, lr.max)
				}
				lr.long = append(lr.long, line...)
				return lr.long, nil
			}
			if len(line) > lr.max {
				return nil, protocolErrorf("%w of %d bytes (Settings.MaxMessageSize)", errNodeLineTooLong, lr.max)
			}
			return line, nil
		}
		if len(lr.long)+lr.w-lr.r > lr.max {
			return nil, protocolErrorf("%w of %d bytes (Settings.MaxMessageSize)", errNodeLineTooLong, lr.max)
		}
		if lr.r == 0 && lr.w == len(lr.buf) {
			// A line longer than the buffer: gather it on the side.
			lr.long = append(lr.long, lr.buf[:lr.w]...)
			lr.w = 0
		}
		if err := lr.fill(); err != nil {
			if errors.Is(err, io.EOF) && (lr.w > lr.r || len(lr.long) > 0) {
				err = protocolErrorf("channel closed in the middle of a line")
			}
			return nil, err
		}
	}
}

func (lr *nodeLineReader) fill() error {
	if lr.r > 0 {
		lr.w = copy(lr.buf, lr.buf[lr.r:lr.w])
		lr.r = 0
	}
	n, hs, err := lr.t.recv(lr.buf[lr.w:])
	lr.w += n
	if len(hs) > 0 {
		lr.pending = append(lr.pending, hs...)
		if extra := len(lr.pending) - maxNodePendingHandles; extra > 0 {
			// Node keeps one handle and overwrites it with the next; the
			// oldest are those no line will ever claim.
			closeHandles(lr.pending[:extra])
			lr.pending = append(lr.pending[:0], lr.pending[extra:]...)
			lr.dropped += extra
		}
	}
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.EOF
	}
	return err
}

// takeHandle returns the oldest handle not yet claimed by a NODE_HANDLE line.
func (lr *nodeLineReader) takeHandle() (sysHandle, bool) {
	if len(lr.pending) == 0 {
		var none sysHandle
		return none, false
	}
	h := lr.pending[0]
	lr.pending = append(lr.pending[:0], lr.pending[1:]...)
	return h, true
}

// droppedHandles returns how many handles the reader closed because no
// line claimed them, since the last call.
func (lr *nodeLineReader) droppedHandles() int {
	n := lr.dropped
	lr.dropped = 0
	return n
}

// buffered returns how many bytes the reader holds that next has not
// returned yet.
func (lr *nodeLineReader) buffered() int { return lr.w - lr.r }

// close releases the handles that arrived but were never claimed, and
// returns how many there were.
func (lr *nodeLineReader) close() int {
	n := len(lr.pending)
	closeHandles(lr.pending)
	lr.pending = nil
	return n
}

// nodeMsg is the part of a line from a Node worker that the primary reads:
// the child_process envelope (cmd, type, msg) and the cluster's fields.
// Fields the worker leaves out stay at their zero value, with a nil pointer
// where absent and zero differ.
type nodeMsg struct {
	Cmd  string          `json:"cmd"`
	Type string          `json:"type"`
	Msg  json.RawMessage `json:"msg"`

	Act         string          `json:"act"`
	Seq         *int64          `json:"seq"`
	Ack         *int64          `json:"ack"`
	Accepted    bool            `json:"accepted"`
	Key         json.RawMessage `json:"key"`
	Index       int             `json:"index"`
	Address     *string         `json:"address"`
	Port        *int            `json:"port"`
	AddressType json.RawMessage `json:"addressType"`
	Backlog     int             `json:"backlog"`
	Fd          *int            `json:"fd"`
	Flags       int             `json:"flags"`
	Data        json.RawMessage `json:"data"`
}

// Node's internal commands (lib/internal/child_process.js and cluster).
const (
	nodeCmdHandle    = "NODE_HANDLE"
	nodeCmdHandleAck = "NODE_HANDLE_ACK"
	nodeCmdHandleNak = "NODE_HANDLE_NACK"
	nodeCmdCluster   = "NODE_CLUSTER"

	// A server's questions about the connections it sent (socket_list.js),
	// and their answers.
	nodeCmdSocketNotifyClose = "NODE_SOCKET_NOTIFY_CLOSE"
	nodeCmdSocketAllClosed   = "NODE_SOCKET_ALL_CLOSED"
	nodeCmdSocketGetCount    = "NODE_SOCKET_GET_COUNT"
	nodeCmdSocketCount       = "NODE_SOCKET_COUNT"
)

// isNodeInternal reports whether cmd makes a message internal in Node: a
// string that starts with NODE_ and is longer than that prefix. Such a
// message never reaches the user's message handlers.
func isNodeInternal(cmd string) bool {
	return len(cmd) > len("NODE_") && strings.HasPrefix(cmd, "NODE_")
}

// parseNodeLine parses one line. internal is false for a user message,
// whose text the line is; then m is not filled in. An error means the line
// is not one JSON text.
func parseNodeLine(line []byte) (m nodeMsg, internal bool, err error) {
	// The two lines a worker sends for every connection under SchedRR,
	// as Node writes them, without encoding/json's reflection: 8% of the
	// primary's CPU time at 3 000 connections/s, measured.
	if bytes.Equal(line, nodeLineAck[:len(nodeLineAck)-1]) {
		return nodeMsg{Cmd: nodeCmdHandleAck}, true, nil
	}
	if m, ok := parseNodeReply(line); ok {
		return m, true, nil
	}
	i := skipJSONSpace(line, 0)
	if i < len(line) && line[i] == '{' && bytes.Contains(line, []byte(`"cmd"`)) {
		if err := json.Unmarshal(line, &m); err != nil {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) {
				return nodeMsg{}, false, err
			}
			// Valid JSON whose fields have types the cluster never
			// sends: internal only if cmd itself is a NODE_ string.
			var c struct {
				Cmd any `json:"cmd"`
			}
			json.Unmarshal(line, &c)
			s, _ := c.Cmd.(string)
			if isNodeInternal(s) {
				return nodeMsg{Cmd: s}, true, err
			}
			return nodeMsg{}, false, nil
		}
		return m, isNodeInternal(m.Cmd), nil
	}
	if n, ok := checkJSON(line); !ok || skipJSONSpace(line, n) != len(line) {
		return nodeMsg{}, false, errors.New("not a JSON text")
	}
	return nodeMsg{}, false, nil
}

// parseNodeReply parses a worker's reply to newconn exactly as Node writes
// it, {"cmd":"NODE_CLUSTER","ack":A,"accepted":B,"seq":S}, and reports
// false for anything else, which parseNodeLine then parses in full.
func parseNodeReply(line []byte) (nodeMsg, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"cmd":"NODE_CLUSTER","ack":`))
	if !ok {
		return nodeMsg{}, false
	}
	ack, rest, ok := cutNodeInt(rest)
	if !ok {
		return nodeMsg{}, false
	}
	m := nodeMsg{Cmd: nodeCmdCluster, Ack: &ack}
	switch {
	case bytes.HasPrefix(rest, []byte(`,"accepted":true`)):
		m.Accepted, rest = true, rest[len(`,"accepted":true`):]
	case bytes.HasPrefix(rest, []byte(`,"accepted":false`)):
		rest = rest[len(`,"accepted":false`):]
	default:
		return nodeMsg{}, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"seq":`)); !ok {
		return nodeMsg{}, false
	}
	seq, rest, ok := cutNodeInt(rest)
	if !ok || string(rest) != "}" {
		return nodeMsg{}, false
	}
	m.Seq = &seq
	return m, true
}

// cutNodeInt parses the non-negative JSON integer b starts with, of at
// most 15 digits (Node's seq counters are exact doubles).
func cutNodeInt(b []byte) (int64, []byte, bool) {
	n := 0
	for n < len(b) && '0' <= b[n] && b[n] <= '9' {
		n++
	}
	if n == 0 || n > 15 || n > 1 && b[0] == '0' {
		return 0, b, false
	}
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	return v, b[n:], err == nil
}

// nodeKey returns the key a cluster message names: the string the primary
// gave in its queryServer reply.
func (m *nodeMsg) nodeKey() (uint32, bool) {
	var s string
	if json.Unmarshal(m.Key, &s) != nil {
		return 0, false
	}
	k, err := strconv.ParseUint(s, 10, 32)
	return uint32(k), err == nil
}

// appendNodeCluster appends the start of a NODE_CLUSTER message with the
// given seq; the caller appends its fields (each starting with a comma) and
// "}".
func appendNodeCluster(b []byte, seq int64) []byte {
	b = append(b, `{"cmd":"NODE_CLUSTER","seq":`...)
	return strconv.AppendInt(b, seq, 10)
}

// appendNodeHandle appends the start of a NODE_HANDLE envelope of type typ,
// one of Node's handle type names (plain ASCII: no escaping); the caller
// appends the inner message and the closing brace. A line that is not
// valid JSON would kill the worker (an uncaught SyntaxError in its reader).
func appendNodeHandle(b []byte, typ string) []byte {
	b = append(b, `{"cmd":"NODE_HANDLE","type":"`...)
	b = append(b, typ...)
	return append(b, `","msg":`...)
}

// The lines the primary writes as they are.
var (
	nodeLineAck  = []byte(`{"cmd":"NODE_HANDLE_ACK"}` + "\n")
	nodeLineNack = []byte(`{"cmd":"NODE_HANDLE_NACK"}` + "\n")
)
