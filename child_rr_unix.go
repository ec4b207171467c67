//go:build unix

package clusternet

// Runs in a worker: reading one connection from a handoff socket (Unix).

import (
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// handoffConn wraps the worker's end of a handoff socket, taking ownership
// of it.
func handoffConn(h sysHandle) (*net.UnixConn, error) {
	return unixConnFromFD(h, "clusternet-handoff")
}

// recvConn reads one record from a handoff socket: a connection, and whether
// it filled the window. It returns io.EOF once the primary has closed it.
func recvConn(c *net.UnixConn) (h sysHandle, last bool, err error) {
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(b[:], oob)
		if err != nil {
			return -1, false, err
		}
		if n == 0 && oobn == 0 {
			return -1, false, io.EOF
		}
		var hs []sysHandle
		if oobn > 0 {
			hs, _ = parseRights(oob[:oobn])
		}
		if len(hs) == 1 && flags&unix.MSG_CTRUNC == 0 && (b[0] == recordConn || b[0] == recordConnLast) {
			return hs[0], b[0] == recordConnLast, nil
		}
		// Only the primary writes here, and only records: this cannot
		// happen, but if it did, what came is not a connection to serve.
		closeHandles(hs)
	}
}
