package clusternet

// The primary's side of the listening tests (listen_*_test.go): forking
// workers that run "ln-serve" (listen_harness_worker_test.go) and waiting
// for what they report, the networks and policies the tests run through,
// and the clients that make requests to the workers. Every name of the
// family starts with "ln" so as not to collide with the other test files of
// the package; what all families share is in harness_test.go.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

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
	base, err := countFDs()
	if err != nil {
		return
	}
	baseList := fdList()
	t.Cleanup(func() {
		// Closing is asynchronous: fdsAtMost waits for the count to come back.
		if !fdsAtMost(t, base, "the primary after the test") {
			t.Logf("descriptors the test left open: %s", fdDiff(baseList, fdList()))
		}
	})
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

// lnUDPRequest sends a datagram to an ln-serve worker from a new socket and
// returns the answer. A datagram can be lost even on loopback (a full
// receive buffer), so it is sent again when no answer comes: losing one is
// not a failure, never getting an answer is.
func lnUDPRequest(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if attempt == 20 {
			return "", errors.New("no answer to 20 datagrams")
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
