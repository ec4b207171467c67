package clusternet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The listening tests fork workers running the "ln-serve" helper, which
// listens where the test says, reports back by message and serves until told
// otherwise. Every name here starts with "ln" so as not to collide with the
// other test files of the package.

// The worker's instructions.
const (
	lnEnvNet  = "CLUSTERNET_LNTEST_NET"
	lnEnvAddr = "CLUSTERNET_LNTEST_ADDR"
	lnEnvOpts = "CLUSTERNET_LNTEST_OPTS" // comma-separated, see lnOpts
)

// lnReport is what an ln-serve worker tells the primary.
type lnReport struct {
	Kind      string // ready, listen-error, closed, serve-ended, fds, backlog, reuseport, error
	Addr      string `json:",omitempty"` // ready: the listener's Addr().String()
	Err       string `json:",omitempty"`
	CloseErr  string `json:",omitempty"` // closed: what Close returned
	ErrClosed bool   `json:",omitempty"` // the error is net.ErrClosed (errors.Is)
	InUse     bool   `json:",omitempty"` // the error is EADDRINUSE (errors.Is)
	Access    bool   `json:",omitempty"` // the error is EACCES (errors.Is)
	N         int    `json:",omitempty"`
	Detail    string `json:",omitempty"`
	Unsup     bool   `json:",omitempty"` // the platform cannot tell (errors.ErrUnsupported)
}

// lnOpts are the ln-serve options.
type lnOpts struct {
	exclusive bool // ListenConfig.Exclusive
	reusePort bool // ListenConfig.ReusePort
	backlog   int  // ListenConfig.Backlog ("backlog=N")
	wait      bool // listen, then serve only once the primary sends "go"
	once      bool // accept one connection, then never call Accept again
	noAccept  bool // listen and never call Accept
	twice     bool // listen a second time on the same address, report "second"
}

func lnParseOpts(s string) lnOpts {
	var o lnOpts
	for _, f := range strings.Split(s, ",") {
		switch {
		case f == "exclusive":
			o.exclusive = true
		case f == "reuseport":
			o.reusePort = true
		case f == "wait":
			o.wait = true
		case f == "once":
			o.once = true
		case f == "noaccept":
			o.noAccept = true
		case f == "twice":
			o.twice = true
		case strings.HasPrefix(f, "backlog="):
			o.backlog, _ = strconv.Atoi(strings.TrimPrefix(f, "backlog="))
		}
	}
	return o
}

func lnIsPacket(network string) bool { return strings.HasPrefix(network, "udp") }

// lnAddrInUse reports whether err says that the address is taken:
// EADDRINUSE, or on Windows Winsock's WSAEADDRINUSE (10048), which is what
// net.Listen itself returns there.
func lnAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || runtime.GOOS == "windows" && errors.Is(err, syscall.Errno(10048))
}

// lnConnTypeOK reports whether a worker's accepted connection has the type
// it must: want, except on Windows, where Go cannot make a *net.TCPConn of
// a socket received from another process and the package gives its own.
func lnConnTypeOK(got, want string) bool {
	return got == want || runtime.GOOS == "windows" && got == "*clusternet.socketConn"
}

func lnErrString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func init() {
	helpers["ln-serve"] = lnServeHelper
}

func lnSend(r lnReport) {
	if err := Self().Send(r); err != nil && !errors.Is(err, ErrChannelClosed) {
		fmt.Fprintf(os.Stderr, "ln-serve worker %d: send %s: %v\n", Self().ID(), r.Kind, err)
	}
}

// lnServeHelper is the worker: it listens on $CLUSTERNET_LNTEST_NET
// $CLUSTERNET_LNTEST_ADDR, reports "ready" with the listener's address (or
// "listen-error"), serves HTTP (or answers datagrams) with "id=<worker id>
// conn=<type of the accepted connection>", and obeys the primary's messages:
// "go", "close", "fds", "inflight", "backlog", "reuseport".
func lnServeHelper() {
	network, address := os.Getenv(lnEnvNet), os.Getenv(lnEnvAddr)
	o := lnParseOpts(os.Getenv(lnEnvOpts))
	lc := ListenConfig{Exclusive: o.exclusive, ReusePort: o.reusePort, Backlog: o.backlog}
	ctx := context.Background()

	closed := make(chan struct{}) // closed by "close", for noaccept
	var sock io.Closer            // what "close" closes
	var inner any                 // the clusternet listener or packet conn, for socket options
	var local net.Addr
	var serve func() error
	if lnIsPacket(network) {
		pc, err := lc.ListenPacket(ctx, network, address)
		if err != nil {
			lnListenFailed(err)
		}
		sock, inner, local = pc, pc, pc.LocalAddr()
		if o.twice {
			pc2, err := lc.ListenPacket(ctx, network, address)
			rep := lnReport{Kind: "second", Err: lnErrString(err), InUse: lnAddrInUse(err)}
			if err == nil {
				rep.Addr = pc2.LocalAddr().String()
				defer pc2.Close() // never: the helper does not return
			}
			lnSend(rep)
		}
		serve = func() error { return lnServePackets(pc) }
	} else {
		ln, err := lc.Listen(ctx, network, address)
		if err != nil {
			lnListenFailed(err)
		}
		sock, inner, local = ln, ln, ln.Addr()
		if o.twice {
			ln2, err := lc.Listen(ctx, network, address)
			rep := lnReport{Kind: "second", Err: lnErrString(err), InUse: lnAddrInUse(err)}
			if err == nil {
				rep.Addr = ln2.Addr().String()
				defer ln2.Close() // never: the helper does not return
			}
			lnSend(rep)
		}
		switch {
		case o.noAccept:
			serve = func() error { <-closed; return nil }
		case o.once:
			ol := &lnOnceListener{Listener: ln, done: make(chan struct{})}
			sock = ol
			serve = func() error { return lnServeHTTP(ol) }
		default:
			serve = func() error { return lnServeHTTP(ln) }
		}
	}

	var startOnce, closeOnce sync.Once
	start := make(chan struct{})
	served := make(chan struct{})
	var serveErr error
	go func() {
		<-start
		serveErr = serve()
		close(served)
		lnSend(lnReport{Kind: "serve-ended", Err: lnErrString(serveErr), ErrClosed: errors.Is(serveErr, net.ErrClosed)})
	}()
	Self().OnMessage(func(m Message) {
		var cmd string
		if err := m.Decode(&cmd); err != nil {
			lnSend(lnReport{Kind: "error", Err: err.Error()})
			return
		}
		switch cmd {
		case "go":
			startOnce.Do(func() { close(start) })
		case "close":
			err := sock.Close()
			closeOnce.Do(func() { close(closed) })
			startOnce.Do(func() { close(start) })
			<-served
			lnSend(lnReport{Kind: "closed", CloseErr: lnErrString(err), Err: lnErrString(serveErr), ErrClosed: errors.Is(serveErr, net.ErrClosed)})
		case "fds":
			n, err := lnFDCount()
			lnSend(lnReport{Kind: "fds", N: n, Err: lnErrString(err), Detail: lnFDList()})
		case "inflight":
			lnSend(lnReport{Kind: "inflight", N: Self().listeners.conns.inFlight()})
		case "backlog":
			n := 0
			rc, err := lnRawConnOf(inner)
			if err == nil {
				n, err = lnBacklog(rc)
			}
			lnSend(lnReport{Kind: "backlog", N: n, Err: lnErrString(err), Unsup: errors.Is(err, errors.ErrUnsupported)})
		case "reuseport":
			on := false
			rc, err := lnRawConnOf(inner)
			if err == nil {
				on, err = lnReusePort(rc)
			}
			n := 0
			if on {
				n = 1
			}
			lnSend(lnReport{Kind: "reuseport", N: n, Err: lnErrString(err), Unsup: errors.Is(err, errors.ErrUnsupported)})
		default:
			lnSend(lnReport{Kind: "error", Err: "unknown command " + cmd})
		}
	})
	lnSend(lnReport{Kind: "ready", Addr: local.String()})
	if !o.wait {
		startOnce.Do(func() { close(start) })
	}
	select {}
}

// lnListenFailed reports a failed Listen and waits to be reaped: exiting now
// could drop the report, which Send only queues.
func lnListenFailed(err error) {
	lnSend(lnReport{Kind: "listen-error", Err: err.Error(),
		InUse: lnAddrInUse(err), Access: errors.Is(err, syscall.EACCES)})
	select {}
}

type lnConnKey struct{}

// lnServeHTTP serves HTTP on ln; the answer names the worker and the type of
// the connection Accept returned, which the worker also reports by message
// ("conn") for its first connection.
func lnServeHTTP(ln net.Listener) error {
	id := Self().ID()
	var first sync.Once
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "id=%d conn=%s", id, r.Context().Value(lnConnKey{}))
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			typ := fmt.Sprintf("%T", c)
			first.Do(func() { lnSend(lnReport{Kind: "conn", Detail: typ}) })
			return context.WithValue(ctx, lnConnKey{}, typ)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return srv.Serve(ln)
}

// lnServePackets answers every datagram with the worker's id.
func lnServePackets(pc net.PacketConn) error {
	reply := []byte(fmt.Sprintf("id=%d conn=%T", Self().ID(), pc))
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		pc.WriteTo(reply, from)
	}
}

// lnOnceListener accepts one connection; later Accepts block until Close,
// never reaching the clusternet listener: a worker that is stuck.
type lnOnceListener struct {
	net.Listener
	mu        sync.Mutex
	accepted  bool
	done      chan struct{}
	closeOnce sync.Once
}

func (l *lnOnceListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	first := !l.accepted
	l.accepted = true
	l.mu.Unlock()
	if first {
		return l.Listener.Accept()
	}
	<-l.done
	return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
}

// Close closes the clusternet listener, then wakes the blocked Accept: the
// http.Server closes its listener again when Serve returns, which must not
// race with this Close.
func (l *lnOnceListener) Close() error {
	err := error(&net.OpError{Op: "close", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed})
	l.closeOnce.Do(func() {
		err = l.Listener.Close()
		close(l.done)
	})
	return err
}

// lnRawConnOf returns the socket under a worker's clusternet listener or
// packet connection (none under round-robin, where the primary has it).
func lnRawConnOf(x any) (syscall.RawConn, error) {
	switch l := x.(type) {
	case *trackedListener:
		x = l.Listener
	case *UDPConn:
		x = l.UDPConn
	}
	sc, ok := x.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("a %T has no socket in the worker", x)
	}
	return sc.SyscallConn()
}

// ---- The primary's side ----

// lnEvent is something an ln-serve worker said, or a listening event about it.
type lnEvent struct {
	kind string // a report's Kind, or "listening" (primary-wide) / "w-listening" (the worker's own)
	rep  lnReport
	addr Address
}

// lnMailbox collects one worker's events in order.
type lnMailbox struct {
	w      *Worker
	mu     sync.Mutex
	events []lnEvent
	signal chan struct{} // closed and replaced when an event arrives
}

func (mb *lnMailbox) put(e lnEvent) {
	mb.mu.Lock()
	mb.events = append(mb.events, e)
	close(mb.signal)
	mb.signal = make(chan struct{})
	mb.mu.Unlock()
}

// take removes and returns the first event of one of kinds.
func (mb *lnMailbox) take(kinds []string) (lnEvent, chan struct{}, bool) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	for i, e := range mb.events {
		if slices.Contains(kinds, e.kind) {
			mb.events = slices.Delete(mb.events, i, i+1)
			return e, nil, true
		}
	}
	return lnEvent{}, mb.signal, false
}

// wait returns the worker's next event of one of kinds. It fails the test if
// the worker exits or testTimeout passes first.
func (mb *lnMailbox) wait(t testing.TB, kinds ...string) lnEvent {
	t.Helper()
	timeout := time.NewTimer(testTimeout)
	defer timeout.Stop()
	for {
		e, signal, ok := mb.take(kinds)
		if ok {
			return e
		}
		select {
		case <-signal:
		case <-mb.w.Done():
			// Every event of the worker was delivered before Done closed.
			if e, _, ok := mb.take(kinds); ok {
				return e
			}
			t.Fatalf("worker %d exited while the test waited for %v", mb.w.ID(), kinds)
		case <-timeout.C:
			t.Fatalf("timed out waiting for %v from worker %d", kinds, mb.w.ID())
		}
	}
}

// lnBox routes the primary's events to the mailboxes of the workers that
// lnFork started. Primary-wide handlers cannot be removed, so they are added
// once and ignore other tests' workers.
var lnBox struct {
	once sync.Once
	mu   sync.Mutex
	m    map[*Worker]*lnMailbox
}

func lnMailboxOf(w *Worker) *lnMailbox {
	lnBox.mu.Lock()
	defer lnBox.mu.Unlock()
	return lnBox.m[w]
}

func lnInstall() {
	lnBox.once.Do(func() {
		lnBox.mu.Lock()
		lnBox.m = make(map[*Worker]*lnMailbox)
		lnBox.mu.Unlock()
		// The fork event runs before any other event of the worker, so the
		// worker's own listening handler added here misses nothing.
		OnFork(func(w *Worker) {
			if mb := lnMailboxOf(w); mb != nil {
				w.OnListening(func(a Address) { mb.put(lnEvent{kind: "w-listening", addr: a}) })
			}
		})
		OnListening(func(w *Worker, a Address) {
			if mb := lnMailboxOf(w); mb != nil {
				mb.put(lnEvent{kind: "listening", addr: a})
			}
		})
		OnMessage(func(w *Worker, m Message) {
			mb := lnMailboxOf(w)
			if mb == nil {
				return
			}
			var rep lnReport
			if err := m.Decode(&rep); err != nil || rep.Kind == "" {
				mb.put(lnEvent{kind: "bad-message", rep: lnReport{Err: fmt.Sprintf("%v: %s", err, m.Raw())}})
				return
			}
			mb.put(lnEvent{kind: rep.Kind, rep: rep})
		})
	})
}

// lnWorker is a worker running ln-serve.
type lnWorker struct {
	*Worker
	mb    *lnMailbox
	ready lnReport
}

// lnFork forks an ln-serve worker that listens on network and address with
// opts; it is reaped when the test ends.
func lnFork(t testing.TB, network, address string, opts ...string) *lnWorker {
	t.Helper()
	lnInstall()
	mb := &lnMailbox{signal: make(chan struct{})}
	env := []string{lnEnvNet + "=" + network, lnEnvAddr + "=" + address, lnEnvOpts + "=" + strings.Join(opts, ",")}
	w := func() *Worker {
		// Held across Fork so that the fork event's handler finds the mailbox.
		lnBox.mu.Lock()
		defer lnBox.mu.Unlock()
		w := fork(t, "ln-serve", env...)
		lnBox.m[w] = mb
		return w
	}()
	mb.w = w
	t.Cleanup(func() {
		reap(t, w)
		lnBox.mu.Lock()
		delete(lnBox.m, w)
		lnBox.mu.Unlock()
	})
	return &lnWorker{Worker: w, mb: mb}
}

// lnStart forks an ln-serve worker and waits until it listens.
func lnStart(t testing.TB, network, address string, opts ...string) *lnWorker {
	t.Helper()
	lw := lnFork(t, network, address, opts...)
	e := lw.mb.wait(t, "ready", "listen-error")
	if e.kind != "ready" {
		t.Fatalf("worker %d: Listen(%q, %q) with %v: %s", lw.ID(), network, address, opts, e.rep.Err)
	}
	lw.ready = e.rep
	return lw
}

// lnStartN starts n workers on the same address.
func lnStartN(t testing.TB, n int, network, address string, opts ...string) []*lnWorker {
	t.Helper()
	ws := make([]*lnWorker, n)
	for i := range ws {
		ws[i] = lnStart(t, network, address, opts...)
	}
	return ws
}

// lnListenError forks an ln-serve worker whose Listen must fail, and returns
// its report.
func lnListenError(t testing.TB, network, address string, opts ...string) lnReport {
	t.Helper()
	lw := lnFork(t, network, address, opts...)
	e := lw.mb.wait(t, "ready", "listen-error")
	if e.kind != "listen-error" {
		t.Fatalf("worker %d: Listen(%q, %q) with %v succeeded at %s; want an error", lw.ID(), network, address, opts, e.rep.Addr)
	}
	return e.rep
}

// send sends the worker a command.
func (lw *lnWorker) send(t testing.TB, cmd string) {
	t.Helper()
	if err := lw.Send(cmd); err != nil {
		t.Fatalf("send %q to worker %d: %v", cmd, lw.ID(), err)
	}
}

// ask sends a command and waits for the report of kind it answers with.
func (lw *lnWorker) ask(t testing.TB, cmd, kind string) lnReport {
	t.Helper()
	lw.send(t, cmd)
	return lw.mb.wait(t, kind).rep
}

func lnIDs(ws []*lnWorker) []int {
	ids := make([]int, len(ws))
	for i, w := range ws {
		ids[i] = w.ID()
	}
	return ids
}

// ---- Addresses and networks ----

var lnIPv6 struct {
	once sync.Once
	err  error
}

// lnRequireIPv6 skips t unless this machine has IPv6 loopback.
func lnRequireIPv6(t testing.TB) {
	t.Helper()
	lnIPv6.once.Do(func() {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err == nil {
			ln.Close()
		}
		lnIPv6.err = err
	})
	if lnIPv6.err != nil {
		t.Skipf("no IPv6 loopback: %v", lnIPv6.err)
	}
}

// lnSockPath returns the path of a Unix socket in a new temporary directory,
// short enough for sun_path.
func lnSockPath(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.sock")
	if len(p) > 100 {
		dir, err := os.MkdirTemp("", "cn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		p = filepath.Join(dir, "s.sock")
	}
	return p
}

// lnCheckFDs makes sure that t leaves the primary with no more descriptors
// open than it has now. Call it before forking: its check runs after the
// workers are reaped and the test's connections closed.
func lnCheckFDs(t testing.TB) {
	t.Helper()
	// The runtime opens its poller's descriptors on first use, for good.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	base, err := lnFDCount()
	if err != nil {
		return
	}
	baseList := lnFDList()
	t.Cleanup(func() {
		// Closing is asynchronous: wait for the count to come back.
		deadline := time.Now().Add(testTimeout)
		for {
			n, _ := lnFDCount()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("the primary has %d descriptors open, %d before the test: %s", n, base, lnFDDiff(baseList, lnFDList()))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// lnFDDiff describes the descriptors in after that are not in before.
func lnFDDiff(before, after string) string {
	old := strings.Fields(before)
	var added []string
	for _, fd := range strings.Fields(after) {
		if !slices.Contains(old, fd) {
			added = append(added, fd)
		}
	}
	if len(added) > 20 {
		added = append(added[:20], fmt.Sprintf("and %d more", len(added)-20))
	}
	return "new: " + strings.Join(added, " ")
}

// lnNetCase is one network of the matrix.
type lnNetCase struct {
	name    string
	network string
	conn    string // the type of the connections the worker gets
}

var lnNets = []lnNetCase{
	{"tcp4", "tcp4", "*net.TCPConn"},
	{"tcp6", "tcp6", "*net.TCPConn"},
	{"unix", "unix", "*net.UnixConn"},
	{"udp", "udp", "*clusternet.UDPConn"},
}

// address skips t when the platform lacks the network and returns a fresh
// loopback address for it: port 0, or a new socket path. Once t's workers
// are gone the primary must have no server left for it.
func (nc lnNetCase) address(t testing.TB) string {
	t.Helper()
	addr := "127.0.0.1:0"
	switch nc.network {
	case "tcp6":
		lnRequireIPv6(t)
		addr = "[::1]:0"
	case "udp6":
		require(t, "udp")
		lnRequireIPv6(t)
		addr = "[::1]:0"
	case "unix":
		require(t, "unix")
		addr = lnSockPath(t)
	case "udp", "udp4":
		require(t, "udp")
	}
	t.Cleanup(func() {
		if sa := lnSharedAddr(nc.network, addr); sa != nil {
			t.Errorf("the primary still has a %s server for %s %s after the test's workers are gone", sa.mode, nc.network, addr)
		}
	})
	return addr
}

var lnPolicies = []Policy{SchedRR, SchedNone, SchedReusePort}

// lnUsePolicy sets the scheduling policy for t, skipping where the platform
// lacks it.
func lnUsePolicy(t testing.TB, p Policy) {
	t.Helper()
	switch p {
	case SchedRR:
		require(t, "rr")
	case SchedReusePort:
		require(t, "reuseport")
	}
	setPolicy(t, p)
}

// lnSharedAddr returns the primary's server for what workers asked, or nil.
func lnSharedAddr(network, address string) *sharedAddr {
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	return cluster.addrs[joinNetwork(network, address)]
}

// lnWantMode is how the primary must share an address: by the policy, except
// that UDP is always shared, Unix sockets cannot be SO_REUSEPORT, and the
// ReusePort option gives each worker a socket of its own.
func lnWantMode(p Policy, network string, reuseOpt bool) shareMode {
	switch {
	case reuseOpt && network != "unix":
		return modeOwn
	case lnIsPacket(network), network == "unix" && p == SchedReusePort:
		return modeShared
	case p == SchedRR:
		return modeRR
	case p == SchedReusePort:
		return modeOwn
	}
	return modeShared
}

// lnCheckAddr checks that got, a worker's listener address, is the real one
// for what the workers asked: the same host, a real port.
func lnCheckAddr(t testing.TB, network, asked, got string) {
	t.Helper()
	if network == "unix" {
		if got != asked {
			t.Errorf("Addr() = %q, want the socket path %q", got, asked)
		}
		return
	}
	host, port, err := net.SplitHostPort(got)
	if err != nil {
		t.Errorf("Addr() = %q: %v", got, err)
		return
	}
	askedHost, askedPort, _ := net.SplitHostPort(asked)
	if host != askedHost || port == "0" || askedPort != "0" && port != askedPort {
		t.Errorf("Addr() = %q for %q: want the host asked for and the port bound", got, asked)
	}
}

// ---- Clients ----

// lnTarget makes requests to the workers listening at one address.
type lnTarget struct {
	network string // tcp, unix or udp
	addr    string
	conn    string // the connection type the worker must report
	client  *http.Client
}

type lnReply struct {
	id   int
	conn string
}

func lnTargetFor(nc lnNetCase, addr string) *lnTarget {
	tg := &lnTarget{network: nc.network, addr: addr, conn: nc.conn}
	switch {
	case lnIsPacket(nc.network):
		tg.network = "udp"
	case nc.network == "unix":
		tg.client = &http.Client{Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", addr)
			},
		}}
	default:
		tg.network = "tcp"
		tg.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	}
	return tg
}

func (tg *lnTarget) url() string {
	if tg.network == "unix" {
		return "http://cn/"
	}
	return "http://" + tg.addr + "/"
}

// request makes one request on a new connection (one datagram for UDP) and
// returns who answered.
func (tg *lnTarget) request(ctx context.Context) (lnReply, error) {
	var body string
	var err error
	if tg.network == "udp" {
		body, err = lnUDPRequest(ctx, tg.addr)
	} else {
		body, err = tg.get(ctx)
	}
	if err != nil {
		return lnReply{}, err
	}
	return lnParseReply(body, tg.conn)
}

func (tg *lnTarget) get(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", tg.url(), nil)
	if err != nil {
		return "", err
	}
	resp, err := tg.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

func lnParseReply(body, wantConn string) (lnReply, error) {
	var r lnReply
	if _, err := fmt.Sscanf(body, "id=%d conn=%s", &r.id, &r.conn); err != nil {
		return r, fmt.Errorf("answer %q: %v", body, err)
	}
	if wantConn != "" && !lnConnTypeOK(r.conn, wantConn) {
		return r, fmt.Errorf("worker %d accepted a %s, want a %s", r.id, r.conn, wantConn)
	}
	return r, nil
}

// lnSpray makes up to n requests, conc at a time, until stop (if set) says
// enough; any failed request fails the test. It returns the count of answers
// per worker.
func lnSpray(t testing.TB, tg *lnTarget, n, conc int, stop func(map[int]int) bool) map[int]int {
	t.Helper()
	ctx := testContext(t)
	counts := make(map[int]int)
	var mu sync.Mutex
	for sent := 0; sent < n && (stop == nil || !stop(counts)); {
		batch := min(conc, n-sent)
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for range batch {
			wg.Go(func() {
				r, err := tg.request(ctx)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				counts[r.id]++
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("request to %s %s after %d: %v", tg.network, tg.addr, sent, err)
		}
		sent += batch
	}
	return counts
}

// lnUntilAll makes requests until every worker in want has answered, at most
// max of them; answers from workers not in want fail the test.
func lnUntilAll(t testing.TB, tg *lnTarget, want []int, max int) map[int]int {
	t.Helper()
	all := func(counts map[int]int) bool {
		for _, id := range want {
			if counts[id] == 0 {
				return false
			}
		}
		return true
	}
	counts := lnSpray(t, tg, max, 4, all)
	for id, n := range counts {
		if !slices.Contains(want, id) {
			t.Errorf("worker %d answered %d request(s); only workers %v should", id, n, want)
		}
	}
	if !all(counts) {
		t.Errorf("after %d requests, answers per worker are %v: want every one of %v", max, counts, want)
	}
	return counts
}

// lnRawRequest sends an HTTP/1.0 request on a new connection without reading
// the answer, so that the connection waits in the cluster.
func lnRawRequest(t testing.TB, network, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(network, addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: cn\r\n\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	return c
}

// lnReadReply reads the answer to a raw request.
func lnReadReply(c net.Conn, br *bufio.Reader, wantConn string) (lnReply, error) {
	if br == nil {
		br = bufio.NewReader(c)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return lnReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return lnReply{}, err
	}
	return lnParseReply(string(b), wantConn)
}

// ---- Tests ----

// TestListenOutsideWorker: in the primary (or any process that is not a
// worker) Listen and ListenPacket are net.Listen and net.ListenPacket.
func TestListenOutsideWorker(t *testing.T) {
	if IsWorker() {
		t.Fatal("the test process is a worker")
	}
	t.Run("tcp", func(t *testing.T) {
		ln, err := Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		nl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer nl.Close()
		if reflect.TypeOf(ln) != reflect.TypeOf(nl) {
			t.Errorf("Listen returned a %T; net.Listen returns a %T", ln, nl)
		}
		lnCheckAddr(t, "tcp4", "127.0.0.1:0", ln.Addr().String())

		// Accepted connections are the net package's, and Close unblocks Accept.
		accepted := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				if _, ok := c.(*net.TCPConn); !ok {
					err = fmt.Errorf("Accept returned a %T, want *net.TCPConn", c)
				}
				c.Close()
			}
			accepted <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := recv(t, accepted, "Accept"); err != nil {
			t.Error(err)
		}
		go func() { _, err := ln.Accept(); accepted <- err }()
		ln.Close()
		if err := recv(t, accepted, "Accept to return after Close"); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}

		// Errors are net.Listen's.
		_, err = Listen("tcp4", nl.Addr().String())
		_, nerr := net.Listen("tcp4", nl.Addr().String())
		if !lnAddrInUse(err) || lnErrString(err) != lnErrString(nerr) {
			t.Errorf("Listen on a taken address: %v; net.Listen: %v", err, nerr)
		}
	})
	t.Run("networks", func(t *testing.T) {
		// What net.Listen refuses, Listen refuses with the same error; what it
		// accepts, Listen accepts.
		for _, c := range []struct{ network, address string }{
			{"udp", "127.0.0.1:0"},
			{"bogus", "127.0.0.1:0"},
			{"tcp4", "[::1]:0"},
			{"tcp", "127.0.0.1:-1"},
		} {
			ln, err := Listen(c.network, c.address)
			nl, nerr := net.Listen(c.network, c.address)
			if ln != nil {
				ln.Close()
			}
			if nl != nil {
				nl.Close()
			}
			if lnErrString(err) != lnErrString(nerr) {
				t.Errorf("Listen(%q, %q): %v; net.Listen: %v", c.network, c.address, err, nerr)
			}
		}
		for _, c := range []struct{ network, address string }{
			{"tcp", "127.0.0.1:0"},
			{"ip4:icmp", "127.0.0.1"},
			{"bogus", "127.0.0.1:0"},
		} {
			pc, err := ListenPacket(c.network, c.address)
			npc, nerr := net.ListenPacket(c.network, c.address)
			if pc != nil {
				pc.Close()
			}
			if npc != nil {
				npc.Close()
			}
			if lnErrString(err) != lnErrString(nerr) {
				t.Errorf("ListenPacket(%q, %q): %v; net.ListenPacket: %v", c.network, c.address, err, nerr)
			}
		}
	})
	t.Run("unix", func(t *testing.T) {
		require(t, "unix")
		for _, network := range []string{"unix", "unixpacket"} {
			// What net.Listen can do here, Listen does the same way.
			path := lnSockPath(t)
			nl, nerr := net.Listen(network, path)
			if nl != nil {
				nl.Close()
			}
			ln, err := Listen(network, path)
			if nerr != nil || err != nil {
				if lnErrString(err) != lnErrString(nerr) {
					t.Errorf("Listen(%q): %v; net.Listen: %v", network, err, nerr)
				}
				if ln != nil {
					ln.Close()
				}
				continue
			}
			if reflect.TypeOf(ln) != reflect.TypeOf(nl) {
				t.Errorf("Listen(%q) returned a %T; net.Listen returns a %T", network, ln, nl)
			}
			if ln.Addr().String() != path {
				t.Errorf("Addr() = %q, want %q", ln.Addr(), path)
			}
			ln.Close()
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s socket file after Close: %v, want it removed as net.Listen's is", network, err)
			}
		}
		path := lnSockPath(t)
		npc, nerr := net.ListenPacket("unixgram", path)
		if npc != nil {
			npc.Close()
			os.Remove(path)
		}
		pc, err := ListenPacket("unixgram", path)
		if pc != nil {
			pc.Close()
		}
		if lnErrString(err) != lnErrString(nerr) {
			t.Errorf(`ListenPacket("unixgram"): %v; net.ListenPacket: %v`, err, nerr)
		}
	})
	t.Run("udp", func(t *testing.T) {
		require(t, "udp")
		pc, err := ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if _, ok := pc.(*net.UDPConn); !ok {
			t.Errorf("ListenPacket returned a %T, want *net.UDPConn", pc)
		}
		lnCheckAddr(t, "udp4", "127.0.0.1:0", pc.LocalAddr().String())
		_, err = ListenPacket("udp4", pc.LocalAddr().String())
		_, nerr := net.ListenPacket("udp4", pc.LocalAddr().String())
		if !lnAddrInUse(err) || lnErrString(err) != lnErrString(nerr) {
			t.Errorf("ListenPacket on a taken address: %v; net.ListenPacket: %v", err, nerr)
		}
	})
}

// TestListenPolicyNetwork runs every policy with every network and three
// workers on one address asked for with port 0: they all listen on the same
// real address, all get traffic, each gets the net package's connections, and
// one worker's Close unblocks its Accept with net.ErrClosed and leaves the
// others serving.
func TestListenPolicyNetwork(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets {
				t.Run(nc.name, func(t *testing.T) { testListenPolicyNetwork(t, p, nc) })
			}
		})
	}
}

func testListenPolicyNetwork(t *testing.T, p Policy, nc lnNetCase) {
	lnUsePolicy(t, p)
	lnCheckFDs(t)
	asked := nc.address(t)
	ws := lnStartN(t, 3, nc.network, asked)

	got := ws[0].ready.Addr
	lnCheckAddr(t, nc.network, asked, got)
	for _, w := range ws {
		if w.ready.Addr != got {
			t.Errorf("worker %d listens at %s, worker %d at %s: want one address", w.ID(), w.ready.Addr, ws[0].ID(), got)
		}
		for _, kind := range []string{"w-listening", "listening"} {
			if a := w.mb.wait(t, kind).addr; a.String() != got || a.Network != nc.network {
				t.Errorf("worker %d: %s event for %+v, want %s %s", w.ID(), kind, a, nc.network, got)
			}
		}
	}
	if sa := lnSharedAddr(nc.network, asked); sa == nil {
		t.Errorf("the primary has no server for %s %s", nc.network, asked)
	} else if want := lnWantMode(p, nc.network, false); sa.mode != want {
		t.Errorf("the primary shares %s %s in mode %q, want %q", nc.network, asked, sa.mode, want)
	}

	tg := lnTargetFor(nc, got)
	ids := lnIDs(ws)
	counts := lnUntilAll(t, tg, ids, 3000)
	t.Logf("answers per worker: %v", counts)
	if !lnIsPacket(nc.network) {
		for _, w := range ws {
			if typ := w.mb.wait(t, "conn").rep.Detail; !lnConnTypeOK(typ, nc.conn) {
				t.Errorf("worker %d: Accept returned a %s, want a %s", w.ID(), typ, nc.conn)
			}
		}
	}

	rep := ws[0].ask(t, "close", "closed")
	if rep.CloseErr != "" || !rep.ErrClosed {
		t.Errorf("worker %d: Close returned %q; the blocked Accept (ReadFrom) returned %q, want net.ErrClosed", ws[0].ID(), rep.CloseErr, rep.Err)
	}
	if nc.network == "unix" {
		if _, err := os.Stat(asked); err != nil {
			t.Errorf("socket file after one worker's Close: %v", err)
		}
	}
	counts = lnUntilAll(t, tg, ids[1:], 3000)
	t.Logf("answers per worker after worker %d's Close: %v", ws[0].ID(), counts)
}

// TestListenBindError: an address the primary cannot bind fails the worker's
// Listen with the bind error itself, and leaves nothing behind in the primary.
func TestListenBindError(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets {
				t.Run(nc.name, func(t *testing.T) {
					lnUsePolicy(t, p)
					testListenBindError(t, nc, nil)
				})
			}
		})
	}
	t.Run("reuseport-option", func(t *testing.T) {
		require(t, "reuseport")
		for _, nc := range lnNets {
			if nc.network == "unix" {
				continue
			}
			t.Run(nc.name, func(t *testing.T) { testListenBindError(t, nc, []string{"reuseport"}) })
		}
	})
}

func testListenBindError(t *testing.T, nc lnNetCase, opts []string) {
	asked := nc.address(t)
	var taken string
	if lnIsPacket(nc.network) {
		pc, err := net.ListenPacket(nc.network, asked)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		taken = pc.LocalAddr().String()
	} else {
		ln, err := net.Listen(nc.network, asked)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		taken = ln.Addr().String()
	}
	rep := lnListenError(t, nc.network, taken, opts...)
	if !rep.InUse {
		t.Errorf("Listen(%q, %q) in a worker: %s; want errors.Is(err, syscall.EADDRINUSE)", nc.network, taken, rep.Err)
	}
	if sa := lnSharedAddr(nc.network, taken); sa != nil {
		t.Errorf("the primary kept a %s server for %s %s after the bind failed", sa.mode, nc.network, taken)
	}
}

// TestListenPrivilegedPort: a port the primary may not bind fails the
// worker's Listen with EACCES.
func TestListenPrivilegedPort(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("the primary runs as root and may bind any port")
	}
	const addr = "127.0.0.1:1"
	if ln, err := net.Listen("tcp4", addr); err == nil {
		ln.Close()
		t.Skip("this machine lets unprivileged processes bind port 1")
	} else if !errors.Is(err, syscall.EACCES) {
		t.Skipf("binding %s in the primary fails with %v, not EACCES", addr, err)
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			rep := lnListenError(t, "tcp4", addr)
			if !rep.Access {
				t.Errorf("Listen(%q) in a worker: %s; want errors.Is(err, syscall.EACCES)", addr, rep.Err)
			}
		})
	}
}

// TestListenRRStuckWorker: under round-robin, workers that do not call Accept
// (one never did, one did once and then stopped, holding a window of credit)
// get no connections: the others serve every one.
func TestListenRRStuckWorker(t *testing.T) {
	for _, nc := range lnNets[:3] {
		t.Run(nc.name, func(t *testing.T) {
			lnUsePolicy(t, SchedRR)
			lnCheckFDs(t)
			asked := nc.address(t)
			once := lnStart(t, nc.network, asked, "once")
			tg := lnTargetFor(nc, once.ready.Addr)
			if r, err := tg.request(testContext(t)); err != nil || r.id != once.ID() {
				t.Fatalf("first request: %+v, %v; want it served by worker %d, the only one accepting", r, err, once.ID())
			}
			never := lnStart(t, nc.network, asked, "noaccept")
			ws := lnStartN(t, 2, nc.network, asked)

			const n = 64
			counts := lnSpray(t, tg, n, 4, nil)
			t.Logf("answers per worker: %v", counts)
			if counts[once.ID()] != 0 || counts[never.ID()] != 0 {
				t.Errorf("stuck workers %d and %d answered %d and %d requests, want none", once.ID(), never.ID(), counts[once.ID()], counts[never.ID()])
			}
			if a, b := counts[ws[0].ID()], counts[ws[1].ID()]; a+b != n || a == 0 || b == 0 {
				t.Errorf("accepting workers %d and %d answered %d and %d of %d requests: want all, shared", ws[0].ID(), ws[1].ID(), a, b, n)
			}
		})
	}
}

// lnWaitHandedOver waits until the primary has handed n connections to w
// that w has not taken, or w gave them back (a worker that does not accept
// returns its queue after a while). It reports whether they were queued for
// w.
func lnWaitHandedOver(t testing.TB, w *Worker, n int) bool {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		var sub *subscription
		for _, s := range w.subs {
			sub = s
		}
		w.mu.Unlock()
		if sub == nil {
			t.Fatalf("worker %d listens nowhere", w.ID())
		}
		sub.sa.mu.Lock()
		sub.look()
		queued, active := sub.queued, sub.active
		sub.sa.mu.Unlock()
		switch {
		case queued >= n:
			return true
		case !active:
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("the primary did not hand %d connections to worker %d", n, w.ID())
	return false
}

// TestListenRRQueuedConns: connections the primary handed to a worker that
// has not taken them go to another worker when that one is killed, closes its
// listener or is disconnected: every client gets an answer.
func TestListenRRQueuedConns(t *testing.T) {
	for _, nc := range lnNets[:3] {
		for _, how := range []string{"kill", "close", "disconnect"} {
			t.Run(nc.name+"/"+how, func(t *testing.T) {
				lnUsePolicy(t, SchedRR)
				lnCheckFDs(t)
				asked := nc.address(t)
				other := lnStart(t, nc.network, asked, "wait")
				stuck := lnStart(t, nc.network, asked, "once")
				tg := lnTargetFor(nc, stuck.ready.Addr)
				if r, err := tg.request(testContext(t)); err != nil || r.id != stuck.ID() {
					t.Fatalf("first request: %+v, %v; want it served by worker %d, the only one accepting", r, err, stuck.ID())
				}

				// The stuck worker holds a window of credit: the next
				// connections are queued for it.
				const n = 20
				dial := "tcp"
				if nc.network == "unix" {
					dial = "unix"
				}
				conns := make([]net.Conn, n)
				for i := range conns {
					conns[i] = lnRawRequest(t, dial, stuck.ready.Addr)
				}
				queued := lnWaitHandedOver(t, stuck.Worker, n)

				switch how {
				case "kill":
					if err := stuck.Kill(os.Kill); err != nil {
						t.Fatal(err)
					}
					waitDone(t, stuck.Worker)
				case "close":
					if rep := stuck.ask(t, "close", "closed"); rep.CloseErr != "" {
						t.Errorf("Close: %s", rep.CloseErr)
					}
				case "disconnect":
					if err := stuck.Disconnect(); err != nil {
						t.Fatal(err)
					}
					waitDone(t, stuck.Worker)
					if !stuck.ExitedAfterDisconnect() {
						t.Error("ExitedAfterDisconnect() = false after Disconnect")
					}
				}
				other.send(t, "go")
				for i, c := range conns {
					r, err := lnReadReply(c, nil, nc.conn)
					if err != nil {
						t.Errorf("connection %d: %v", i, err)
					} else if r.id != other.ID() {
						t.Errorf("connection %d answered by worker %d, want %d", i, r.id, other.ID())
					}
				}
				if !queued {
					t.Logf("worker %d gave its queue back before it was %sed: the connections were not queued for it then", stuck.ID(), how)
				}
			})
		}
	}
}

// TestListenFDCount: thousands of connections leave the primary's and the
// workers' descriptor counts where they started.
func TestListenFDCount(t *testing.T) {
	if _, err := lnFDCount(); err != nil {
		t.Skipf("cannot count descriptors here: %v", err)
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets[:3] {
				t.Run(nc.name, func(t *testing.T) {
					n := 1000
					if p == SchedRR && nc.network != "tcp6" {
						n = 2000
					}
					testListenFDCount(t, p, nc, n)
				})
			}
		})
	}
}

func testListenFDCount(t *testing.T, p Policy, nc lnNetCase, n int) {
	lnUsePolicy(t, p)
	asked := nc.address(t)
	ws := lnStartN(t, 2, nc.network, asked)
	tg := lnTargetFor(nc, ws[0].ready.Addr)

	base, _ := lnFDCount()
	baseList := lnFDList()
	wbase := make([]lnReport, len(ws))
	for i, w := range ws {
		wbase[i] = w.ask(t, "fds", "fds")
		if wbase[i].Err != "" {
			t.Fatalf("worker %d: %s", w.ID(), wbase[i].Err)
		}
	}

	counts := lnSpray(t, tg, n, 8, nil)
	t.Logf("%d connections, answers per worker: %v", n, counts)

	// Closing is asynchronous on both ends of a connection: wait for the
	// counts to come back.
	deadline := time.Now().Add(testTimeout)
	for {
		now, _ := lnFDCount()
		settled := now <= base
		var wnow []lnReport
		for i, w := range ws {
			r := w.ask(t, "fds", "fds")
			wnow = append(wnow, r)
			settled = settled && r.N <= wbase[i].N
		}
		if settled {
			return
		}
		if time.Now().After(deadline) {
			if now > base {
				t.Errorf("primary: %d descriptors open, %d before; %s", now, base, lnFDDiff(baseList, lnFDList()))
			}
			for i, w := range ws {
				if wnow[i].N > wbase[i].N {
					t.Errorf("worker %d: %d descriptors open, %d before; %s", w.ID(), wnow[i].N, wbase[i].N, lnFDDiff(wbase[i].Detail, wnow[i].Detail))
				}
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lnSetDir sets the working directory later forks give their workers, until
// t ends.
func lnSetDir(t testing.TB, dir string) {
	cluster.mu.Lock()
	old := cluster.settings
	cluster.settings.Dir = dir
	cluster.mu.Unlock()
	t.Cleanup(func() {
		cluster.mu.Lock()
		cluster.settings = old
		cluster.mu.Unlock()
	})
}

// TestListenUnixRelativePath: a relative socket path is relative to the
// worker's working directory, not the primary's, and workers in different
// directories get different sockets.
func TestListenUnixRelativePath(t *testing.T) {
	require(t, "unix")
	nc := lnNets[2]
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			const rel = "rel.sock"
			if _, err := os.Stat(rel); err == nil {
				t.Fatalf("%s exists in the primary's directory before the test", rel)
			}
			var ws []*lnWorker
			var dirs []string
			for range 2 {
				dir := filepath.Dir(lnSockPath(t))
				lnSetDir(t, dir)
				ws = append(ws, lnStart(t, "unix", rel))
				dirs = append(dirs, dir)
			}
			if _, err := os.Stat(rel); err == nil {
				os.Remove(rel)
				t.Errorf("a worker's relative socket path was bound in the primary's directory")
			}
			for i, w := range ws {
				want := filepath.Join(dirs[i], rel)
				gotFI, err1 := os.Stat(w.ready.Addr)
				wantFI, err2 := os.Stat(want)
				if err1 != nil || err2 != nil || !os.SameFile(gotFI, wantFI) || !filepath.IsAbs(w.ready.Addr) {
					t.Errorf("worker %d in %s listens at %q (%v), want %q (%v)", w.ID(), dirs[i], w.ready.Addr, err1, want, err2)
					continue
				}
				if a := w.mb.wait(t, "listening").addr; a.Host != w.ready.Addr || a.Type != Unix {
					t.Errorf("worker %d: listening event for %+v, want the absolute path %q", w.ID(), a, w.ready.Addr)
				}
				tg := lnTargetFor(nc, want)
				lnUntilAll(t, tg, []int{w.ID()}, 5)
			}
		})
	}
}

// TestListenUnixSocketFile: the socket file outlives one worker's Close or
// death, and is removed when the last worker stops listening or the cluster
// disconnects.
func TestListenUnixSocketFile(t *testing.T) {
	require(t, "unix")
	nc := lnNets[2]
	for _, p := range lnPolicies {
		for _, how := range []string{"close", "kill", "disconnect"} {
			t.Run(p.String()+"/"+how, func(t *testing.T) {
				lnUsePolicy(t, p)
				lnCheckFDs(t)
				path := nc.address(t)
				ws := lnStartN(t, 2, "unix", path)
				tg := lnTargetFor(nc, path)
				exists := func(when string, want bool) {
					t.Helper()
					_, err := os.Stat(path)
					if want && err != nil {
						t.Errorf("socket file %s: %v", when, err)
					}
					if !want && !errors.Is(err, os.ErrNotExist) {
						t.Errorf("socket file %s: %v, want it removed", when, err)
					}
				}
				stop := func(w *lnWorker) {
					t.Helper()
					switch how {
					case "close":
						w.ask(t, "close", "closed")
					case "kill":
						if err := w.Kill(os.Kill); err != nil {
							t.Fatal(err)
						}
						waitDone(t, w.Worker)
					}
				}
				if how == "disconnect" {
					exists("while workers listen", true)
					if err := Disconnect(testContext(t)); err != nil {
						t.Fatalf("Disconnect: %v", err)
					}
					for _, w := range ws {
						if !w.IsDead() || !w.ExitedAfterDisconnect() {
							t.Errorf("worker %d after Disconnect: dead %v, exited after disconnect %v", w.ID(), w.IsDead(), w.ExitedAfterDisconnect())
						}
					}
					exists("after the cluster disconnected", false)
					return
				}
				stop(ws[0])
				exists("after one of two workers stopped listening", true)
				lnUntilAll(t, tg, []int{ws[1].ID()}, 5)
				stop(ws[1])
				exists("after the last worker stopped listening", false)
			})
		}
	}
}

// TestListenBacklog: ListenConfig.Backlog reaches the listening socket,
// wherever it is bound.
func TestListenBacklog(t *testing.T) {
	ctl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	rc, _ := ctl.(*net.TCPListener).SyscallConn()
	if err := setBacklog(ctl, 5); err != nil {
		t.Fatal(err)
	}
	if n, err := lnBacklog(rc); err != nil || n != 5 {
		t.Skipf("the backlog of a listening socket is not observable here (%d, %v)", n, err)
	}
	const backlog = 7
	check := func(t *testing.T, opts ...string) {
		w := lnStart(t, "tcp4", "127.0.0.1:0", append(opts, "backlog="+strconv.Itoa(backlog))...)
		var n int
		if sa := lnSharedAddr("tcp4", "127.0.0.1:0"); sa != nil && sa.sock != nil && !slices.Contains(opts, "exclusive") {
			// The primary's socket (round-robin).
			rc, err := sa.sock.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if n, err = lnBacklog(rc); err != nil {
				t.Fatal(err)
			}
		} else {
			rep := w.ask(t, "backlog", "backlog")
			if rep.Unsup {
				t.Skip("the backlog is not observable here")
			}
			if rep.Err != "" {
				t.Fatalf("worker %d: %s", w.ID(), rep.Err)
			}
			n = rep.N
		}
		if n != backlog {
			t.Errorf("listen backlog %d, want %d", n, backlog)
		}
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			check(t)
		})
	}
	t.Run("exclusive", func(t *testing.T) { check(t, "exclusive") })
	t.Run("reuseport-option", func(t *testing.T) {
		require(t, "reuseport")
		check(t, "reuseport")
	})
}

// TestListenListeningEvent: the worker's and the primary-wide listening
// events carry the real address and its type.
func TestListenListeningEvent(t *testing.T) {
	cases := []struct {
		network, host string
		typ           AddressType
	}{
		{"tcp", "127.0.0.1", TCP4},
		{"tcp4", "127.0.0.1", TCP4},
		{"tcp6", "::1", TCP6},
		{"unix", "", Unix},
		{"udp", "127.0.0.1", UDP4},
		{"udp4", "127.0.0.1", UDP4},
		{"udp6", "::1", UDP6},
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.network, func(t *testing.T) {
					lnUsePolicy(t, p)
					asked := lnNetCase{network: c.network}.address(t)
					w := lnStart(t, c.network, asked)
					want := Address{Network: c.network, Host: c.host, Type: c.typ}
					if c.typ == Unix {
						want.Host = asked
					} else {
						_, port, _ := net.SplitHostPort(w.ready.Addr)
						want.Port, _ = strconv.Atoi(port)
						if want.Port == 0 {
							t.Errorf("worker listens at %s", w.ready.Addr)
						}
					}
					for _, kind := range []string{"w-listening", "listening"} {
						if got := w.mb.wait(t, kind).addr; got != want {
							t.Errorf("%s event: %+v, want %+v", kind, got, want)
						}
					}
					if s := w.State(); s != StateListening {
						t.Errorf("State() = %v after the listening event, want %v", s, StateListening)
					}
				})
			}
		})
	}
}

// TestListenExclusive: ListenConfig.Exclusive binds in the worker itself,
// without the primary; the address is not shared.
func TestListenExclusive(t *testing.T) {
	nc := lnNets[0]
	w := lnStart(t, "tcp4", "127.0.0.1:0", "exclusive")
	lnCheckAddr(t, "tcp4", "127.0.0.1:0", w.ready.Addr)
	if a := w.mb.wait(t, "listening").addr; a.String() != w.ready.Addr || a.Type != TCP4 {
		t.Errorf("listening event for %+v, want %s", a, w.ready.Addr)
	}
	cluster.mu.Lock()
	for id, sa := range cluster.addrs {
		if _, addr, _ := cutNetwork(sa.boundAt); addr == w.ready.Addr || strings.HasSuffix(id, w.ready.Addr) {
			t.Errorf("the primary has a server %q bound at %q for an exclusive listener", id, sa.boundAt)
		}
	}
	cluster.mu.Unlock()

	tg := lnTargetFor(nc, w.ready.Addr)
	lnUntilAll(t, tg, []int{w.ID()}, 5)

	// Not shared: another worker asking for the same address exclusively
	// cannot bind it.
	rep := lnListenError(t, "tcp4", w.ready.Addr, "exclusive")
	if !rep.InUse {
		t.Errorf("a second exclusive Listen on %s: %s; want EADDRINUSE", w.ready.Addr, rep.Err)
	}

	if rep := w.ask(t, "close", "closed"); rep.CloseErr != "" || !rep.ErrClosed {
		t.Errorf("Close returned %q; the blocked Accept returned %q, want net.ErrClosed", rep.CloseErr, rep.Err)
	}
	if c, err := net.Dial("tcp4", w.ready.Addr); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the exclusive listener's Close", w.ready.Addr)
	}
}

// TestListenReusePortOption: ListenConfig.ReusePort gives each worker its own
// SO_REUSEPORT socket on one port, whatever the policy; with Exclusive the
// workers bind those sockets themselves.
func TestListenReusePortOption(t *testing.T) {
	require(t, "reuseport")
	run := func(t *testing.T, nc lnNetCase, opts ...string) {
		asked := nc.address(t)
		first := lnStart(t, nc.network, asked, opts...)
		addr := asked
		if slices.Contains(opts, "exclusive") {
			addr = first.ready.Addr // nobody shares the port 0 for them
		}
		ws := []*lnWorker{first, lnStart(t, nc.network, addr, opts...)}
		if ws[1].ready.Addr != first.ready.Addr {
			t.Errorf("workers listen at %s and %s, want one address", first.ready.Addr, ws[1].ready.Addr)
		}
		if !slices.Contains(opts, "exclusive") {
			if sa := lnSharedAddr(nc.network, asked); sa == nil || sa.mode != modeOwn {
				t.Errorf("the primary's server for %s %s: %+v, want mode %q", nc.network, asked, sa, modeOwn)
			}
		}
		for _, w := range ws {
			if rep := w.ask(t, "reuseport", "reuseport"); !rep.Unsup && (rep.Err != "" || rep.N != 1) {
				t.Errorf("worker %d: SO_REUSEPORT = %d (%s), want it set", w.ID(), rep.N, rep.Err)
			}
		}
		lnUntilAll(t, lnTargetFor(nc, first.ready.Addr), lnIDs(ws), 3000)
	}
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range []lnNetCase{lnNets[0], lnNets[3]} {
				t.Run(nc.name, func(t *testing.T) {
					lnUsePolicy(t, p)
					run(t, nc, "reuseport")
				})
			}
		})
	}
	t.Run("exclusive", func(t *testing.T) {
		for _, nc := range []lnNetCase{lnNets[0], lnNets[3]} {
			t.Run(nc.name, func(t *testing.T) { run(t, nc, "reuseport", "exclusive") })
		}
	})
}

// TestListenTwiceInOneWorker: as with net.Listen in one process, a worker
// that listens twice on one address gets EADDRINUSE the second time, and its
// first listener goes on as if nothing happened: it serves, and its Close
// releases the address.
func TestListenTwiceInOneWorker(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			for _, nc := range lnNets {
				t.Run(nc.name, func(t *testing.T) {
					lnUsePolicy(t, p)
					lnCheckFDs(t)
					asked := nc.address(t)
					w := lnStart(t, nc.network, asked, "twice")
					if rep := w.mb.wait(t, "second").rep; !rep.InUse {
						t.Errorf("second Listen(%q, %q) in one worker: %q at %q, want EADDRINUSE", nc.network, asked, rep.Err, rep.Addr)
					}
					other := lnStart(t, nc.network, asked)
					tg := lnTargetFor(nc, w.ready.Addr)
					lnUntilAll(t, tg, []int{w.ID(), other.ID()}, 3000)
					w.ask(t, "close", "closed")
					lnUntilAll(t, tg, []int{other.ID()}, 20)
					other.ask(t, "close", "closed")
					if sa := lnSharedAddr(nc.network, asked); sa != nil {
						t.Errorf("the primary still has its %s server for %s %s after every listener closed", sa.mode, nc.network, asked)
					}
					if nc.network == "unix" {
						if _, err := os.Stat(asked); !errors.Is(err, os.ErrNotExist) {
							t.Errorf("socket file after every listener closed: %v, want it removed", err)
						}
					}
				})
			}
		})
	}
}

// TestListenWorkerDisconnect: Worker.Disconnect on a serving worker stops new
// connections to it; it keeps serving the connection it holds, and exits once
// the client closes that.
func TestListenWorkerDisconnect(t *testing.T) {
	for _, p := range lnPolicies {
		t.Run(p.String(), func(t *testing.T) {
			lnUsePolicy(t, p)
			lnCheckFDs(t)
			nc := lnNets[0]
			asked := nc.address(t)
			ws := lnStartN(t, 2, nc.network, asked)
			leaving, staying := ws[0], ws[1]
			addr := leaving.ready.Addr

			// A keep-alive connection served by the worker that will leave.
			var held net.Conn
			var br *bufio.Reader
			for i := 0; held == nil; i++ {
				if i == 1000 {
					t.Fatalf("no connection of %d reached worker %d", i, leaving.ID())
				}
				c := lnKeepAlive(t, addr)
				r, cbr := lnKeepAliveRequest(t, c, nil)
				if r.id == leaving.ID() {
					held, br = c, cbr
				} else {
					c.Close()
				}
			}

			if err := leaving.Disconnect(); err != nil {
				t.Fatal(err)
			}
			if rep := leaving.mb.wait(t, "serve-ended"); !rep.rep.ErrClosed {
				t.Errorf("worker %d: Accept after Disconnect returned %q, want net.ErrClosed", leaving.ID(), rep.rep.Err)
			}
			tg := lnTargetFor(nc, addr)
			lnUntilAll(t, tg, []int{staying.ID()}, 20)

			// Still there for the connection it holds, which it waits for.
			if rep := leaving.ask(t, "inflight", "inflight"); rep.N != 1 {
				t.Errorf("worker %d waits for %d connections to close, want 1: the one held open", leaving.ID(), rep.N)
			}
			if r, _ := lnKeepAliveRequest(t, held, br); r.id != leaving.ID() {
				t.Errorf("the held connection was answered by worker %d, want %d", r.id, leaving.ID())
			}
			select {
			case <-leaving.Done():
				t.Fatalf("worker %d exited while a connection it accepted was open", leaving.ID())
			default:
			}
			held.Close()
			waitDone(t, leaving.Worker)
			if !leaving.ExitedAfterDisconnect() {
				t.Error("ExitedAfterDisconnect() = false after Disconnect")
			}
			lnUntilAll(t, tg, []int{staying.ID()}, 5)
		})
	}
}

func lnKeepAlive(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

// lnKeepAliveRequest makes an HTTP/1.1 request that keeps c open.
func lnKeepAliveRequest(t testing.TB, c net.Conn, br *bufio.Reader) (lnReply, *bufio.Reader) {
	t.Helper()
	if br == nil {
		br = bufio.NewReader(c)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: cn\r\n\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	r, err := lnReadReply(c, br, "*net.TCPConn")
	if err != nil {
		t.Fatalf("keep-alive request: %v", err)
	}
	return r, br
}
