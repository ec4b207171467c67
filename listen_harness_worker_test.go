package clusternet

// The worker of the listening tests: the "ln-serve" helper listens where
// the test says (CLUSTERNET_LNTEST_*), reports back by message and serves
// until told otherwise. The primary's side is in listen_harness_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

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
			n, err := countFDs()
			lnSend(lnReport{Kind: "fds", N: n, Err: lnErrString(err), Detail: fdList()})
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
