//go:build !linux

package clusternet

// Runs in a worker, on systems other than Linux: ServeHTTP's drain cannot
// tell whether a byte ever arrived on a connection.

import (
	"net"
	"time"
)

// neverReceived says that it cannot tell: ServeHTTP then closes a
// connection that has not begun a request as net/http's Shutdown does, once
// it has waited more than 5 seconds for one.
func neverReceived(net.Conn) (arrival, time.Duration) { return unknown, 0 }
