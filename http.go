package clusternet

// Shared: ServeHTTP, srv.Serve for a worker that may be disconnected, and in
// a worker the record of its server's connections (srv.ConnState) by which
// the drain closes those on which no request has begun.

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// ServeHTTP is srv.Serve(ln) for a worker that may be disconnected.
//
// When the worker drains (the primary's [Worker.Disconnect], [Reload] or the
// graceful shutdown of [Run], a SIGINT or SIGTERM, Self().Disconnect()), its
// listeners close and srv.Serve returns. Calling srv.Shutdown then would be
// wrong: net/http drops any request it reads after Shutdown has begun, even
// on a connection accepted just before, so a client would see its connection
// closed without an answer. ServeHTTP instead turns keep-alives off, which
// closes idle connections and lets every request in progress, or already
// sent, finish with its response, and closes the connections on which no
// request has begun (below); the worker exits with code 0 once its last
// connection is closed, so in that case ServeHTTP does not return.
//
// Clients open connections ahead of their requests (net/http's Transport
// does), and one on which nothing has arrived would hold the drain up until
// its client closed it. On Linux, over TCP, ServeHTTP asks the kernel how
// many bytes arrived on each connection that has not begun a request
// (TCP_INFO). It closes those on which none did once they have been open for
// the connection's retransmission timeout (200 ms at least): a client that
// opens a connection for a request sends it at once, and its first bytes
// would have arrived by then even if lost on the way once. It leaves the
// others to finish the request that is arriving (srv.ReadHeaderTimeout
// bounds a slow one; net/http itself closes, as the drain begins, one that
// has already waited more than 5 seconds for it). Where that cannot be told
// (Unix sockets, TLS connections past their handshake, connections a
// listener wraps, other systems), a connection that has not begun a request
// is closed as [http.Server.Shutdown] closes it: once it has waited more
// than 5 seconds for one. A request sent just as its connection closes
// fails, as it may whenever a server closes a connection it has not used
// (RFC 9112, section 9.5); net/http's Transport sends it again on another
// connection when the request can be replayed.
//
// To know which connections have begun a request, ServeHTTP, in a worker,
// sets srv.ConnState to a function that records each state and then calls
// the srv.ConnState it found, if any. It sets srv.ConnState back once it has
// returned and the connections it served are closed: set srv.ConnState
// before calling ServeHTTP, and do not set it while it runs.
//
// Connections taken out of net/http (hijacked: WebSockets,
// golang.org/x/net/http2/h2c) and responses that never end (streams) are the
// server's: the worker waits for them to close like any other, until Run's
// shutdown timeout kills it. Watch [Draining], which is closed as the drain
// begins, to close them as their protocol says (a WebSocket close frame, a
// last event). ServeHTTP does not run the functions registered with
// srv.RegisterOnShutdown, which only srv.Shutdown runs: run yours when
// Draining's channel closes.
//
// Outside a worker, ServeHTTP is srv.Serve(ln). When the listener fails for
// another reason, ServeHTTP returns what srv.Serve returned.
func ServeHTTP(srv *http.Server, ln net.Listener) error {
	w := Self()
	if w == nil {
		return srv.Serve(ln)
	}
	hc := followConns(srv)
	err := srv.Serve(ln)
	if !errors.Is(err, net.ErrClosed) || !w.isDisconnecting() {
		hc.release()
		return err
	}
	srv.SetKeepAlivesEnabled(false)
	for {
		wait, undecided := hc.closeUnused(time.Now())
		if undecided {
			// Left to net/http's own rule, which SetKeepAlivesEnabled(false)
			// applies each time it is called, as Shutdown calls it again
			// and again.
			if wait == 0 || wait > newConnPoll {
				wait = newConnPoll
			}
		} else if wait == 0 {
			break
		}
		time.Sleep(wait)
		if undecided {
			srv.SetKeepAlivesEnabled(false)
		}
	}
	select {} // Disconnect ends the process once the connections are closed.
}

// newConnPoll is how often a draining ServeHTTP asks net/http to close the
// connections that have waited too long for their first request: 500 ms is
// the longest interval between Shutdown's own polls.
const newConnPoll = 500 * time.Millisecond

func (w *Worker) isDisconnecting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.disconnecting
}

// httpConns is what ServeHTTP knows of one server's connections in a worker:
// the state net/http last reported for each (srv.ConnState), so that the
// drain can tell which have not begun a request.
type httpConns struct {
	srv  *http.Server
	user func(net.Conn, http.ConnState) // the srv.ConnState ServeHTTP found

	// Guarded by httpServers.mu.
	conns   map[net.Conn]connState // open: one entry per connection, gone at StateClosed or StateHijacked
	serving int                    // ServeHTTP calls on srv under way
}

// connState is what httpConns knows of a connection.
type connState struct {
	st    http.ConnState // the last state net/http reported
	since time.Time      // when it reported StateNew
}

// httpServers holds the servers whose srv.ConnState ServeHTTP has replaced
// and not yet given back. One lock for all: a state change only updates a
// map entry under it.
var httpServers struct {
	mu sync.Mutex
	m  map[*http.Server]*httpConns
}

// followConns starts following srv's connections, or joins a ServeHTTP
// call already following them (the same server on several listeners).
func followConns(srv *http.Server) *httpConns {
	httpServers.mu.Lock()
	defer httpServers.mu.Unlock()
	hc := httpServers.m[srv]
	if hc == nil {
		hc = &httpConns{srv: srv, user: srv.ConnState, conns: make(map[net.Conn]connState)}
		if httpServers.m == nil {
			httpServers.m = make(map[*http.Server]*httpConns)
		}
		httpServers.m[srv] = hc
		srv.ConnState = hc.record
	}
	hc.serving++
	return hc
}

// record is srv.ConnState while ServeHTTP follows srv.
func (hc *httpConns) record(c net.Conn, st http.ConnState) {
	httpServers.mu.Lock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		delete(hc.conns, c)
		hc.giveBackLocked()
	case http.StateNew:
		hc.conns[c] = connState{st: st, since: time.Now()}
	default:
		cs := hc.conns[c]
		cs.st = st
		hc.conns[c] = cs
	}
	httpServers.mu.Unlock()
	if hc.user != nil {
		hc.user(c, st)
	}
}

// release ends one ServeHTTP call's following of srv.
func (hc *httpConns) release() {
	httpServers.mu.Lock()
	hc.serving--
	hc.giveBackLocked()
	httpServers.mu.Unlock()
}

// giveBackLocked puts the user's srv.ConnState back once no ServeHTTP call
// serves srv and no connection it served is open. net/http reads
// srv.ConnState only to report a state: every read for a connection that
// was followed happened before its last report took httpServers.mu, and
// every Serve call that could report a new one has returned.
func (hc *httpConns) giveBackLocked() {
	if hc.serving > 0 || len(hc.conns) > 0 || httpServers.m[hc.srv] != hc {
		return
	}
	hc.srv.ConnState = hc.user
	delete(httpServers.m, hc.srv)
}

// fresh returns the connections that have not begun a request, and when
// each was accepted.
func (hc *httpConns) fresh() map[net.Conn]time.Time {
	httpServers.mu.Lock()
	defer httpServers.mu.Unlock()
	cs := make(map[net.Conn]time.Time)
	for c, s := range hc.conns {
		if s.st == http.StateNew {
			cs[c] = s.since
		}
	}
	return cs
}

// closing records that ServeHTTP closed c, until net/http reports it.
func (hc *httpConns) closing(c net.Conn) {
	httpServers.mu.Lock()
	defer httpServers.mu.Unlock()
	if cs, ok := hc.conns[c]; ok {
		cs.st = http.StateClosed
		hc.conns[c] = cs
	}
}

// closeUnused closes the connections that have not begun a request and on
// which no byte ever arrived, none of which can hold a request half read (a
// connection turns StateActive only once net/http has read part of a
// request, so StateNew alone does not say that nothing arrived), once they
// have been open for their retransmission timeout, the kernel's estimate of
// how long a lost segment takes to be sent again: a client that opens a
// connection for a request writes it at once, so its first bytes have
// arrived by then. A connection on which a request has begun to arrive is
// left to finish it. closeUnused returns how long until the next of the
// silent ones is due (0 if none is left), and whether some could not be
// told about.
func (hc *httpConns) closeUnused(now time.Time) (wait time.Duration, undecided bool) {
	for c, since := range hc.fresh() {
		a, grace := neverReceived(c)
		switch {
		case a == unknown:
			undecided = true
		case a == nothing && now.Sub(since) >= grace:
			c.Close()
			hc.closing(c)
		case a == nothing:
			if d := since.Add(grace).Sub(now); wait == 0 || d < wait {
				wait = d
			}
		}
	}
	return wait, undecided
}

// arrival is what neverReceived can tell of a connection.
type arrival int

const (
	unknown  arrival = iota
	nothing          // no byte ever arrived: no request has begun
	received         // a request has begun to arrive
)
