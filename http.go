package clusternet

// Shared: ServeHTTP, srv.Serve for a worker that may be disconnected.

import (
	"errors"
	"net"
	"net/http"
)

// ServeHTTP is srv.Serve(ln) for a worker that may be disconnected.
//
// When the primary disconnects the worker (Worker.Disconnect, Reload, or a
// graceful shutdown of Run), the worker's listeners close and srv.Serve
// returns. Calling srv.Shutdown then would be wrong: net/http drops any
// request it reads after Shutdown has begun, even on a connection accepted
// just before, so a client would see its connection closed without an
// answer. ServeHTTP instead turns keep-alives off, which closes idle
// connections and lets every request in progress, or already sent, finish
// with its response; the worker exits with code 0 once its last connection
// is closed, so in that case ServeHTTP does not return.
//
// Outside a worker, or when the listener fails for another reason,
// ServeHTTP returns what srv.Serve returned.
func ServeHTTP(srv *http.Server, ln net.Listener) error {
	err := srv.Serve(ln)
	w := Self()
	if w == nil || !errors.Is(err, net.ErrClosed) || !w.isDisconnecting() {
		return err
	}
	srv.SetKeepAlivesEnabled(false)
	select {} // Disconnect ends the process once the connections are closed.
}

func (w *Worker) isDisconnecting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.disconnecting
}
