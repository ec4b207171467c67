package clusternet

// Runs in a worker: Draining, which tells the worker's own code that it has
// begun to drain, so that it can close the connections the package cannot
// (hijacked ones, streams) as their protocol wants.

import "sync"

var (
	drainStarted = make(chan struct{}) // closed by startDraining
	drainOnce    sync.Once
)

// Draining returns a channel that is closed when this worker begins to
// drain: at the very start, before its listeners close, whatever started it
// (the primary's [Worker.Disconnect], [Reload] or the graceful shutdown of
// [Run], a SIGINT or SIGTERM that the worker drains on, or
// Self().Disconnect()). Once it is closed, the worker stops accepting, waits
// for the connections its listeners handed out to close, and exits with code
// 0. Every call returns the same channel.
//
// The worker waits for its connections, not for the code that watches the
// channel: work that must be done before it exits belongs in a
// Self().OnDisconnect handler, which runs once the connections are closed,
// or must hold a connection open until it is done.
//
// A server whose connections outlive a request should watch it and close
// them as its protocol says: a WebSocket close frame with status 1001 (going
// away), an HTTP/2 or gRPC GOAWAY, the end of a stream of server-sent events.
// The package cannot do that for them: [ServeHTTP] closes the connections
// net/http still owns, but not those taken out of net/http (hijacked) nor
// responses that never end, and without Draining the worker waits for them
// until Run's shutdown timeout kills it.
//
// In the primary, and in a program that is not a worker, Draining returns
// nil, a channel that is never ready.
func Draining() <-chan struct{} {
	if self == nil {
		return nil
	}
	return drainStarted
}

// startDraining closes Draining's channel; drainSelf calls it first.
func startDraining() { drainOnce.Do(func() { close(drainStarted) }) }
