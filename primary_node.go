package clusternet

// Runs in the primary: workers that are Node.js programs (Settings.NodeIPC).
// The primary starts them as Node's cluster.fork does and speaks Node's own
// protocols on their channel: child_process's lines of JSON with handles
// (node_ipc.go), and the cluster's messages. docs/node-workers.md describes
// both as checked against Node v20.
//
// Outgoing lines follow Node's discipline for handles: after a line that
// carries a handle (NODE_HANDLE), everything else waits until the worker
// answers it (NODE_HANDLE_ACK or NACK), because the worker's reader pairs a
// handle with the next NODE_HANDLE line it parses, through one slot that a
// second handle overwrites. ACK and NACK themselves are written at once.
//
// Under SchedRR a Node worker's subscription (primary_rr.go) is sent
// connections as newconn messages: the primary keeps each connection until
// the worker's reply says it accepted it, hands a refused one to another
// worker, and, when the worker dies, another worker gets every connection
// the worker had not yet taken from its channel. Settings.NodeWindow lets
// more than Node's one connection per worker and address be in flight:
// handle lines are then pipelined, which is safe while every read of the
// worker's reader ends at the end of a handle line (see canWriteLocked).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The environment Node reads at startup (lib/internal/bootstrap and
// lib/internal/cluster): the cluster worker's id, the channel's descriptor
// and its serialization. Node deletes them from process.env.
const (
	envNodeUniqueID      = "NODE_UNIQUE_ID"
	envNodeChannelFD     = "NODE_CHANNEL_FD"
	envNodeSerialization = "NODE_CHANNEL_SERIALIZATION_MODE"
)

// nodeResends is how often a handle line the worker refused (NACK) is sent
// again before its handle is dropped; Node's own limit (child_process.js).
const nodeResends = 3

// maxNodeWindow bounds Settings.NodeWindow.
const maxNodeWindow = 32

// A pipelined handle line is written only while, since the end of the
// newest handle line the worker has answered, the channel carries at most
// nodePipelineBytes and nodePipelineLines. Node's reader reads 64 KiB at a
// time and stops at the end of every write that carries a handle; with less
// than that between two such ends, a handle and its line always arrive in
// the same read, which is what makes a second one in flight safe. The line
// bound keeps the socket buffer's per-write overhead (about 1 KiB for a
// small write) far below its size (checked at fork: nodeSendBufferMin).
const (
	nodePipelineBytes = 8 << 10
	nodePipelineLines = 64
	nodeSendBufferMin = 256 << 10
)

var errNodeNoChannel = errors.New("Settings.NodeIPC: Node's IPC channel is a Unix socket; this system has no Node workers")

// nodeEnv is the environment of a Node worker: the primary's, then
// Settings.Env, then the fork's env, then Node's cluster variables (the
// channel is placed right after Settings.ExtraFiles, see startProcess).
// clusternet's own variables are left out, CLUSTERNET_WORKER_ID first: the
// worker is not a clusternet worker, nor are the programs it starts
// (startProcess adds CLUSTERNET_CHANNEL, which means nothing without it).
func nodeEnv(s *Settings, id int, extra []string) ([]string, error) {
	if !nodeSupported {
		return nil, errNodeNoChannel
	}
	if s.Serialization != JSON {
		return nil, fmt.Errorf("Settings.NodeIPC speaks JSON with Node workers; Serialization %v is not supported", s.Serialization)
	}
	if len(s.Args) == 0 {
		// Node without a script never starts its cluster worker: no online.
		return nil, errors.New("Settings.NodeIPC: Args must name the script (node's argv[1])")
	}
	if s.NodeWindow < 0 || s.NodeWindow > maxNodeWindow {
		return nil, fmt.Errorf("Settings.NodeWindow %d is out of range 0..%d", s.NodeWindow, maxNodeWindow)
	}
	env := slices.Concat(os.Environ(), s.Env, extra, []string{
		envNodeUniqueID + "=" + strconv.Itoa(id),
		envNodeChannelFD + "=" + strconv.Itoa(3+len(s.ExtraFiles)),
		envNodeSerialization + "=json",
	})
	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		k, _, _ := strings.Cut(env[i], "=")
		if seen[k] || strings.HasPrefix(k, "CLUSTERNET_") {
			continue
		}
		seen[k] = true
		out = append(out, env[i])
	}
	slices.Reverse(out)
	return out, nil
}

// forkEnv is the environment of worker id.
func forkEnv(s *Settings, id int, extra []string) ([]string, error) {
	if s.NodeIPC {
		return nodeEnv(s, id, extra)
	}
	return workerEnv(s, id, extra), nil
}

// nodeWorker is the primary's side of the channel to a Node worker.
type nodeWorker struct {
	w      *Worker
	lr     *nodeLineReader // the reader's only
	window int             // connections in flight per address (SchedRR)
	pipe   bool            // handle lines may be pipelined (window > 1 and the socket buffer allows it)

	mu       sync.Mutex
	closed   bool
	seq      int64               // the primary's cluster seq: the last one used
	held     []*nodeLine         // waiting for the handle line in flight to be answered
	heldSize int                 // their bytes, bounded by the channel's limit
	inflight []*nodeLine         // handle lines written and not yet answered, oldest first
	written  int64               // bytes given to the channel
	lines    int64               // lines given to the channel
	ackedEnd int64               // written when the newest answered handle line was
	ackedAt  int64               // lines when it was
	conns    map[int64]*nodeConn // newconn sent, by seq, until the worker's reply
}

// nodeLine is one line for the worker, with the handle that goes with it.
type nodeLine struct {
	b      []byte
	h      sysHandle
	hasH   bool
	end    int64  // written after this line (handle lines)
	lines  int64  // lines after this one
	tries  int    // resends after NACK
	onAck  func() // the worker took the handle
	onDrop func() // it never will: refused too often, or the channel closed
}

// nodeConn is a connection sent as newconn, until the worker's reply.
type nodeConn struct {
	fd    sysHandle
	sub   *subscription
	acked bool // the worker read it (NODE_HANDLE_ACK): it has its copy
}

func newNodeWorker(w *Worker, s *Settings) *nodeWorker {
	n := &nodeWorker{
		w:      w,
		window: max(1, s.NodeWindow),
		conns:  make(map[int64]*nodeConn),
	}
	n.pipe = n.window > 1 && nodeSendBuffer(w.ch.t, nodeSendBufferMin) >= nodeSendBufferMin
	// The frame reader's buffer is idle for a Node worker: the line reader uses it.
	n.lr = newNodeLineReader(w.ch.t, s.MaxMessageSize, w.ch.reader.buf)
	w.codec = JSON
	return n
}

// send writes l now if the discipline allows, or queues it. On error
// (the channel is closed) nothing is queued and no callback runs.
func (n *nodeWorker) send(l *nodeLine) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrChannelClosed
	}
	if len(n.held) > 0 || !n.canWriteLocked(l) {
		if lim := n.w.ch.limit; lim > 0 && n.heldSize > 0 && n.heldSize+len(l.b) > lim {
			return n.overflowLocked()
		}
		n.held = append(n.held, l)
		n.heldSize += len(l.b)
		return nil
	}
	return n.writeLocked(l)
}

// overflowLocked closes the channel of a worker that leaves a handle
// unanswered while more than the channel's limit waits behind it, as the
// channel closes itself for a worker that does not read (channel.send).
func (n *nodeWorker) overflowLocked() error {
	ch := n.w.ch
	err := fmt.Errorf("disconnected: it does not answer the handle sent to it (%d bytes held for it, the limit is %d)", n.heldSize, ch.limit)
	ch.mu.Lock()
	if ch.overflow == nil {
		ch.overflow = err
	}
	if ch.err == nil {
		ch.err = err
	}
	ch.closing = true
	ch.cond.Signal()
	ch.mu.Unlock()
	ch.t.close() // unblocks the writer and the reader
	return fmt.Errorf("%w: %w", ErrChannelClosed, err)
}

// canWriteLocked reports whether l may be written now. With no handle line
// unanswered anything may. Otherwise, as Node, nothing may, unless
// pipelining is on and, since the end of the newest answered handle line
// (where a read of the worker ended), the channel stays within
// nodePipelineBytes and nodePipelineLines with l: a read of the worker's
// 64 KiB then never cuts a handle line from its handle.
func (n *nodeWorker) canWriteLocked(l *nodeLine) bool {
	if len(n.inflight) == 0 {
		return true
	}
	if !n.pipe || len(n.inflight) >= n.window {
		return false
	}
	return n.written+int64(len(l.b))-n.ackedEnd <= nodePipelineBytes && n.lines+1-n.ackedAt <= nodePipelineLines
}

func (n *nodeWorker) writeLocked(l *nodeLine) error {
	f := outFrame{b: l.b, keep: true}
	if l.hasH {
		f.handles = []sysHandle{l.h}
	}
	if err := n.w.ch.send(f); err != nil {
		return err
	}
	n.written += int64(len(l.b))
	n.lines++
	if l.hasH {
		l.end, l.lines = n.written, n.lines
		n.inflight = append(n.inflight, l)
	}
	return nil
}

// writeNow writes b ahead of what is held: Node's ACK and NACK.
func (n *nodeWorker) writeNow(b []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.writeLocked(&nodeLine{b: b})
	}
}

// flushLocked writes what is held, in order, while the discipline allows.
func (n *nodeWorker) flushLocked() {
	for len(n.held) > 0 && n.canWriteLocked(n.held[0]) {
		l := n.held[0]
		n.held[0] = nil
		n.held = n.held[1:]
		n.heldSize -= len(l.b)
		if n.writeLocked(l) != nil {
			return // closing: shutdown drops the rest
		}
	}
}

// answered handles the worker's NODE_HANDLE_ACK (ok) or NACK for the oldest
// handle line in flight.
func (n *nodeWorker) answered(ok bool) error {
	n.mu.Lock()
	if len(n.inflight) == 0 {
		n.mu.Unlock()
		return fmt.Errorf("an answer (%s) to no handle", map[bool]string{true: nodeCmdHandleAck, false: nodeCmdHandleNak}[ok])
	}
	l := n.inflight[0]
	n.inflight[0] = nil
	n.inflight = n.inflight[1:]
	n.ackedEnd, n.ackedAt = l.end, l.lines
	var run func()
	dropped := false
	switch {
	case ok:
		run = l.onAck
	case l.tries < nodeResends:
		// Node resends what its peer refused; it goes first.
		l.tries++
		n.held = append([]*nodeLine{l}, n.held...)
		n.heldSize += len(l.b)
	default:
		run, dropped = l.onDrop, true
	}
	n.flushLocked()
	n.mu.Unlock()
	if run != nil {
		run()
	}
	if dropped {
		return fmt.Errorf("the worker refused a handle %d times (%s); it was dropped", nodeResends+1, nodeCmdHandleNak)
	}
	return nil
}

// nextSeq returns the primary's next cluster seq for this worker.
func (n *nodeWorker) nextSeq() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seq++
	return n.seq
}

// shutdown drops everything not yet answered once the channel has closed
// and its writer has stopped, and hands the connections the worker never
// read to the other workers.
func (n *nodeWorker) shutdown() {
	n.mu.Lock()
	n.closed = true
	lines := append(n.inflight, n.held...)
	n.inflight, n.held, n.heldSize = nil, nil, 0
	conns := n.conns
	n.conns = make(map[int64]*nodeConn)
	n.mu.Unlock()
	for _, l := range lines {
		if l.onDrop != nil {
			l.onDrop()
		}
	}
	stopHandoffs(n.w)
	for _, c := range conns {
		// A connection the worker read is its own: it serves it, or its
		// death closed it. One it never read died with the channel's
		// queue in the worker, and the primary's copy goes on.
		n.connDone(c, c.acked)
	}
}

// connDone ends the primary's part in a connection sent to the worker: the
// worker took it (close the primary's copy), or it goes to another worker.
func (n *nodeWorker) connDone(c *nodeConn, taken bool) {
	sa := c.sub.sa
	sa.mu.Lock()
	defer sa.mu.Unlock()
	c.sub.nodeInflight--
	if taken {
		closeHandles([]sysHandle{c.fd})
		n.w.stats.accepted.Add(1)
	} else if sa.closed {
		closeHandles([]sysHandle{c.fd})
	} else {
		sa.pending = append([]sysHandle{c.fd}, sa.pending...)
		sa.flushPending()
	}
	if !sa.closed && sa.mode == modeRR && len(sa.pending) == 0 {
		if room := c.sub.room(); room > 0 {
			if hs := nodeAcceptNow(sa, room); len(hs) > 0 {
				sa.pending = sa.distribute(hs)
				if len(sa.pending) == 0 && sa.room() == 0 {
					return // the accept loop would find nothing to do
				}
			}
		}
	}
	sa.cond.Signal()
}

// handOver sends the worker hs as newconn messages. It returns those the
// channel did not take. Called with sub.sa.mu held.
func (n *nodeWorker) handOver(sub *subscription, hs []sysHandle) []sysHandle {
	key := strconv.FormatUint(uint64(sub.sa.key), 10)
	for i, fd := range hs {
		if err := nodeNonblock(fd); err != nil {
			// fcntl(F_SETFL) fails on no open socket: a connection
			// nobody can serve.
			closeHandles(hs[i : i+1])
			continue
		}
		seq := n.nextSeq()
		b := appendNodeHandle(make([]byte, 0, 128), "net.Native")
		b = appendNodeCluster(b, seq)
		b = append(b, `,"act":"newconn","key":"`...)
		b = append(b, key...)
		b = append(b, "\"}}\n"...)
		c := &nodeConn{fd: fd, sub: sub}
		n.mu.Lock()
		n.conns[seq] = c
		n.mu.Unlock()
		err := n.send(&nodeLine{b: b, h: fd, hasH: true, onAck: func() {
			n.mu.Lock()
			c.acked = true
			n.mu.Unlock()
		}, onDrop: func() {
			n.mu.Lock()
			_, mine := n.conns[seq]
			delete(n.conns, seq)
			n.mu.Unlock()
			if mine {
				n.connDone(c, false)
			}
		}})
		if err != nil {
			n.mu.Lock()
			delete(n.conns, seq)
			n.mu.Unlock()
			sub.active = false
			return hs[i:]
		}
		sub.nodeInflight++
		n.w.stats.handed.Add(1)
	}
	return nil
}

// read reads the worker's lines until the channel closes.
func (n *nodeWorker) read() error {
	for {
		line, err := n.lr.next()
		if err != nil {
			return err
		}
		if err := n.handleLine(line); err != nil {
			return err
		}
		if d := n.lr.droppedHandles(); d > 0 {
			n.reportf("closed %d handle(s) that no %s line claimed", d, nodeCmdHandle)
		}
	}
}

// handleLine handles one line. Bad input from the worker is reported as
// an error event and the line dropped; only an error that leaves the
// channel unusable is returned.
func (n *nodeWorker) handleLine(line []byte) error {
	w := n.w
	m, internal, err := parseNodeLine(line)
	if err != nil {
		if internal {
			n.reportf("dropped an internal message %s: %w", m.Cmd, err)
			return nil
		}
		w.dropInvalid(err)
		return nil
	}
	if !internal {
		w.stats.messagesIn.Add(1)
		w.postMessage(line, false, nil, nil)
		return nil
	}
	switch m.Cmd {
	case nodeCmdHandleAck, nodeCmdHandleNak:
		if err := n.answered(m.Cmd == nodeCmdHandleAck); err != nil {
			n.reportf("%w", err)
		}
	case nodeCmdHandle:
		n.handleHandle(&m)
	case nodeCmdCluster:
		n.handleCluster(&m)
	case nodeCmdSocketNotifyClose, nodeCmdSocketGetCount:
		n.socketList(&m)
	default:
		n.reportf("dropped an unknown internal message %q", m.Cmd)
	}
	return nil
}

// reportf reports bad input from the worker in an error event. The event
// holds a place in the worker's inbox until its handlers have run, as an
// undecodable message does (dropInvalid): a worker that sends nothing but
// bad lines is slowed down through its channel instead of growing the
// event queue.
func (n *nodeWorker) reportf(format string, args ...any) {
	w := n.w
	err := fmt.Errorf("clusternet: worker %d: "+format, append([]any{w.id}, args...)...)
	w.inbox.reserve(0)
	events.post(func() {
		defer w.inbox.release(0)
		for _, fn := range w.onError.list() {
			fn(err)
		}
	})
}

// socketList answers what a worker's server asks about the connections it
// sent the primary (lib/internal/socket_list.js: a net.Socket sent with a
// key). The primary does not follow what becomes of a connection once a
// handler has taken it, so it answers as if the primary held none: the
// worker's server.close() does not wait for them (it would wait forever
// for an answer otherwise), and getConnections() counts only the worker's.
func (n *nodeWorker) socketList(m *nodeMsg) {
	var key string
	if json.Unmarshal(m.Key, &key) != nil {
		n.reportf("dropped a %s without a key", m.Cmd)
		return
	}
	quoted, _ := json.Marshal(key)
	b := []byte(`{"cmd":"`)
	if m.Cmd == nodeCmdSocketNotifyClose {
		b = append(b, nodeCmdSocketAllClosed...)
	} else {
		b = append(b, nodeCmdSocketCount...)
	}
	b = append(b, `","key":`...)
	b = append(b, quoted...)
	if m.Cmd == nodeCmdSocketGetCount {
		b = append(b, `,"count":0`...)
	}
	n.send(&nodeLine{b: append(b, "}\n"...)})
}

// nodeHandleKinds is what each type of handle a worker may send becomes.
var nodeHandleKinds = map[string]handleKind{
	"net.Socket":   handleConn,
	"net.Server":   handleListener,
	"dgram.Socket": handlePacketConn,
}

// handleHandle answers a NODE_HANDLE line at once, as Node does, and
// delivers its message with the handle.
func (n *nodeWorker) handleHandle(m *nodeMsg) {
	w := n.w
	h, ok := n.lr.takeHandle()
	if !ok {
		n.writeNow(nodeLineNack)
		n.reportf("a %s line came without a handle; answered %s", nodeCmdHandle, nodeCmdHandleNak)
		return
	}
	n.writeNow(nodeLineAck)
	kind, known := nodeHandleKinds[m.Type]
	inner, internal, err := parseNodeLine(m.Msg)
	switch {
	case len(m.Msg) == 0:
		err = errors.New("it has no message")
	case err != nil:
	case internal:
		err = fmt.Errorf("it carries the internal message %q", inner.Cmd)
	case !known:
		err = fmt.Errorf("its type %q is not one a worker sends", m.Type)
	}
	if err != nil {
		closeHandles([]sysHandle{h})
		n.reportf("dropped a handle: %w", err)
		return
	}
	w.stats.messagesIn.Add(1)
	w.postMessage(m.Msg, false, nil, &receivedHandle{kind: kind, h: h})
}

// handleCluster handles a NODE_CLUSTER message: a reply to newconn, or an
// act of the worker's.
func (n *nodeWorker) handleCluster(m *nodeMsg) {
	w := n.w
	if m.Ack != nil {
		n.mu.Lock()
		c := n.conns[*m.Ack]
		delete(n.conns, *m.Ack)
		n.mu.Unlock()
		if c != nil {
			n.connDone(c, m.Accepted)
			return
		}
	}
	if m.Seq == nil {
		n.reportf("dropped a cluster message without seq (act %q)", m.Act)
		return
	}
	if !w.online && m.Act != "online" {
		n.reportf("dropped a cluster message %q before online", m.Act)
		return
	}
	switch m.Act {
	case "online":
		if w.online {
			n.reportf("reported online twice")
			return
		}
		w.postOnline()
	case "queryServer":
		n.queryServer(m)
	case "listening":
		n.listening(m)
	case "close":
		key, ok := m.nodeKey()
		if !ok {
			n.reportf("closed a server with a malformed key %s", m.Key)
			return
		}
		if sub := w.takeSub(key); sub != nil {
			sub.sa.unsubscribe(sub, w.leaving() && holdAddrs(), false)
		}
	case "exitedAfterDisconnect":
		w.mu.Lock()
		w.exitedAfterDisconnect = true
		w.mu.Unlock()
		// The worker waits for this answer before it closes the channel.
		b := appendNodeCluster(nil, n.nextSeq())
		b = append(b, `,"ack":`...)
		b = strconv.AppendInt(b, *m.Seq, 10)
		n.send(&nodeLine{b: append(b, "}\n"...)})
	default:
		n.reportf("dropped a cluster message with the unknown act %q", m.Act)
	}
}

// nodeAddrType is a queryServer's addressType: 4, 6, -1 (a Unix socket
// path), "udp4" or "udp6".
func nodeAddrType(raw json.RawMessage) (AddressType, bool) {
	switch string(bytes.TrimSpace(raw)) {
	case "4":
		return TCP4, true
	case "6":
		return TCP6, true
	case "-1":
		return Unix, true
	case `"udp4"`:
		return UDP4, true
	case `"udp6"`:
		return UDP6, true
	}
	return 0, false
}

// nodeUDPReuseAddr is UV_UDP_REUSEADDR in a dgram queryServer's flags.
const nodeUDPReuseAddr = 4

// nodeRequest turns a queryServer into the listen request a Go worker
// would send. An address Node leaves null is every interface: "tcp" binds
// both IPv6 and IPv4 where it can, as Node's primary does.
//
// The queryServer's flags are not all honoured: IPv6-only (1) is not, so
// listen({ipv6Only: true}) shares a dual-stack socket.
func nodeRequest(m *nodeMsg) (listenRequest, AddressType, error) {
	typ, ok := nodeAddrType(m.AddressType)
	if !ok {
		return listenRequest{}, 0, fmt.Errorf("unknown addressType %s", m.AddressType)
	}
	if m.Fd != nil && *m.Fd >= 0 {
		return listenRequest{}, 0, errors.New("listening on a descriptor of the worker's is not shared by this primary")
	}
	req := listenRequest{Index: m.Index, Backlog: m.Backlog}
	host := ""
	if m.Address != nil {
		host = *m.Address
	}
	port := 0
	if m.Port != nil {
		port = *m.Port
	}
	if typ != Unix && (port < 0 || port > 65535) {
		return listenRequest{}, 0, fmt.Errorf("port %d out of range", port)
	}
	switch typ {
	case Unix:
		if host == "" {
			return listenRequest{}, 0, errors.New("a Unix socket without a path")
		}
		req.Network, req.Address = "unix", host
		return req, typ, nil
	case TCP4, TCP6:
		// "tcp", as a Go worker's Listen most often says: the address
		// literal fixes the family, and the two kinds of worker share
		// one socket.
		req.Network = "tcp"
	case UDP4, UDP6:
		req.Network, req.Packet = "udp4", true
		if typ == UDP6 {
			req.Network = "udp6"
		}
		req.ReuseAddr = m.Flags&nodeUDPReuseAddr != 0
	}
	req.Address = net.JoinHostPort(host, strconv.Itoa(port))
	return req, typ, nil
}

// nodeErrno is the negative errno (libuv's error code on Unix) that a
// queryServer reply carries for err.
func nodeErrno(err error) int64 {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return -int64(errno)
	}
	if we := toWireError(err); we.Errno != 0 {
		return -int64(we.Errno)
	}
	return -int64(syscall.EINVAL)
}

// queryServer binds or shares the address a worker's server.listen() asks
// for, as a Go worker's Listen would, and answers with Node's reply: under
// SchedRR a key and the address bound (the primary accepts and sends
// newconn); otherwise the socket itself.
func (n *nodeWorker) queryServer(m *nodeMsg) {
	w := n.w
	req, typ, err := nodeRequest(m)
	var rep listenReply
	var hs []sysHandle
	if err == nil {
		w.mu.Lock()
		leaving := w.disconnecting
		w.mu.Unlock()
		if leaving {
			return // as Node: a worker on its way out is not answered
		}
		rep, hs = listenFor(w, req)
		if rep.Err != nil {
			err = errors.New(rep.Err.Msg)
			if rep.Err.Errno != 0 {
				err = syscall.Errno(rep.Err.Errno)
			}
		}
	}
	seq := n.nextSeq()
	b := appendNodeCluster(make([]byte, 0, 256), seq)
	b = append(b, `,"ack":`...)
	b = strconv.AppendInt(b, *m.Seq, 10)
	if err != nil {
		closeHandles(hs)
		b = append(b, `,"errno":`...)
		b = strconv.AppendInt(b, nodeErrno(err), 10)
		b = append(b, `,"key":null,"data":null}`+"\n"...)
		n.send(&nodeLine{b: b})
		return
	}
	w.mu.Lock()
	sub := w.subs[rep.Key]
	w.mu.Unlock()
	if sub == nil {
		closeHandles(hs) // the worker's channel closed meanwhile
		return
	}
	sa := sub.sa
	b = append(b, `,"key":"`...)
	b = strconv.AppendUint(b, uint64(rep.Key), 10)
	b = append(b, `","data":`...)
	b = append(b, n.sharedData(sa, m.Data)...)
	if rep.Mode == modeRR {
		// The subscription was made with a handoff socket, for a Go
		// worker: a Node worker is sent newconn messages instead. The
		// subscription is not active yet, so nothing was sent there.
		closeHandles(hs)
		b = append(b, `,"errno":null`...)
		if network, addr, ok := cutNetwork(sa.boundAt); ok && network != "unix" {
			if host, port, err := net.SplitHostPort(addr); err == nil {
				family := "IPv4"
				if strings.Contains(host, ":") {
					family = "IPv6"
				}
				b = append(b, `,"sockname":{"address":`...)
				quoted, _ := json.Marshal(host) // JSON's quoting, not Go's
				b = append(b, quoted...)
				b = append(b, `,"family":"`...)
				b = append(b, family...)
				b = append(b, `","port":`...)
				b = append(b, port...)
				b = append(b, '}')
			}
		}
		n.send(&nodeLine{b: append(b, "}\n"...)})
		sa.mu.Lock()
		if sub.handoff {
			closeHandles([]sysHandle{sub.out, sub.peer})
			sub.handoff = false
		}
		sub.node = n
		w.mu.Lock()
		leaving := w.disconnecting || w.exitedAfterDisconnect
		w.mu.Unlock()
		if !sa.closed && !leaving { // a disconnect meanwhile stopped the handoffs
			sub.active, sub.window = true, n.window
			sa.flushPending()
			sa.cond.Signal()
		}
		sa.mu.Unlock()
		return
	}
	// Shared: the socket goes with the reply; the worker listens on it.
	b = append(b, `,"errno":0}}`+"\n"...)
	typName := "net.Native"
	if typ == UDP4 || typ == UDP6 {
		typName = "dgram.Native"
	}
	env := appendNodeHandle(make([]byte, 0, len(b)+64), typName)
	env = append(env, b...)
	h := hs[0]
	if err := n.send(&nodeLine{b: env, h: h, hasH: true,
		onAck:  func() { closeHandles([]sysHandle{h}) },
		onDrop: func() { closeHandles([]sysHandle{h}) },
	}); err != nil {
		closeHandles(hs)
	}
}

// sharedData returns the queryServer data that every worker on sa gets:
// the first worker's (Node's shared per-server data, such as TLS ticket
// keys).
func (n *nodeWorker) sharedData(sa *sharedAddr, data json.RawMessage) json.RawMessage {
	nodeShared.mu.Lock()
	defer nodeShared.mu.Unlock()
	for k := range nodeShared.data {
		k.mu.Lock()
		closed := k.closed
		k.mu.Unlock()
		if closed {
			delete(nodeShared.data, k)
		}
	}
	if d, ok := nodeShared.data[sa]; ok {
		return d
	}
	if len(bytes.TrimSpace(data)) == 0 {
		data = json.RawMessage("null")
	}
	d := append(json.RawMessage(nil), data...)
	nodeShared.data[sa] = d
	return d
}

// nodeShared holds the data of the addresses Node workers listen on,
// until they close.
var nodeShared = struct {
	mu   sync.Mutex
	data map[*sharedAddr]json.RawMessage
}{data: make(map[*sharedAddr]json.RawMessage)}

// listening records that the worker's server listens, as a Go worker's
// listening report does.
func (n *nodeWorker) listening(m *nodeMsg) {
	w := n.w
	req, typ, err := nodeRequest(m)
	if err != nil {
		n.reportf("dropped a listening message: %w", err)
		return
	}
	a := Address{Network: req.Network, Type: typ}
	if typ == Unix {
		a.Host = req.Address
	} else {
		a.Host, _, _ = net.SplitHostPort(req.Address)
		if m.Port != nil {
			a.Port = *m.Port
		}
		if a.Host == "" {
			a.Host = n.boundHost(req)
		}
	}
	if err := w.noteListening(a); err != nil {
		n.reportf("%w", err)
		return
	}
	w.postListening(a)
	if s := runningSupervisor(); s != nil {
		s.kick()
	}
}

// boundHost is the host the primary bound for a request with no host.
func (n *nodeWorker) boundHost(req listenRequest) string {
	for _, sub := range n.w.subscriptions(false) {
		if sub.sa.id != addrID(req) {
			continue
		}
		if _, addr, ok := cutNetwork(sub.sa.boundAt); ok {
			host, _, _ := net.SplitHostPort(addr)
			return host
		}
	}
	if req.Network == "udp6" || req.Network == "tcp" {
		return "::"
	}
	return "0.0.0.0"
}

// disconnect asks the worker to leave gracefully: it closes its servers,
// then the channel, and exits once its event loop is empty.
func (n *nodeWorker) disconnect() error {
	b := appendNodeCluster(nil, n.nextSeq())
	err := n.send(&nodeLine{b: append(b, `,"act":"disconnect"}`+"\n"...)})
	if err != nil && !errors.Is(err, ErrChannelClosed) {
		return err
	}
	return nil
}

// sendMessage is Send to a Node worker: msg as one line of JSON, and a
// handle as Node's net.Socket, net.Server or dgram.Socket.
func (n *nodeWorker) sendMessage(msg any, opts []SendOption) error {
	var o sendOptions
	for _, opt := range opts {
		opt(&o)
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("clusternet: encoding message with JSON: %w", err)
	}
	if len(b) > n.w.max {
		return fmt.Errorf("clusternet: message of %d bytes is larger than the limit of %d bytes (Settings.MaxMessageSize)", len(b), n.w.max)
	}
	if _, internal, _ := parseNodeLine(b); internal {
		return fmt.Errorf("clusternet: a message whose cmd starts with NODE_ is Node's own: the worker would never see it")
	}
	if o.handle == nil {
		if err := n.send(&nodeLine{b: append(b, '\n')}); err != nil {
			return err
		}
		n.w.stats.messagesOut.Add(1)
		return nil
	}
	kind, err := classifyHandle(o.handle)
	if err != nil {
		return err
	}
	typ := ""
	switch kind {
	case handleConn:
		typ = "net.Socket"
	case handleListener:
		typ = "net.Server"
	case handlePacketConn:
		typ = "dgram.Socket"
	default:
		return fmt.Errorf("%w: a Node worker takes sockets only, not a %T", ErrInvalidHandle, o.handle)
	}
	env := appendNodeHandle(make([]byte, 0, len(b)+64), typ)
	env = append(env, b...)
	if kind == handlePacketConn {
		dt := "udp4"
		if a, ok := o.handle.(net.PacketConn).LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil && len(a.IP) > 0 {
			dt = "udp6"
		}
		env = append(env, `,"dgramType":"`...)
		env = append(env, dt...)
		env = append(env, '"')
	}
	env = append(env, "}\n"...)
	h, err := dupHandle(o.handle)
	if err != nil {
		return err
	}
	release := func() { closeHandles([]sysHandle{h}) }
	if err := n.send(&nodeLine{b: env, h: h, hasH: true, onAck: release, onDrop: release}); err != nil {
		release()
		return err
	}
	if c, ok := o.handle.(net.Conn); ok && kind == handleConn && !o.keepOpen {
		c.Close() // as Send to a Go worker: the connection is the worker's now
	}
	n.w.stats.messagesOut.Add(1)
	return nil
}
