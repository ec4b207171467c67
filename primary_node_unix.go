//go:build unix

package clusternet

// Runs in the primary: the system's part of Node workers on Unix, whose
// channel is the socket pair every worker has.

import "golang.org/x/sys/unix"

// nodeSupported says that this system can fork Node workers.
const nodeSupported = true

// nodeSendBuffer asks for a send buffer of want bytes on the primary's end
// of the channel and returns the size the kernel granted (Linux doubles
// what it is asked, capped by net.core.wmem_max), or 0 if it cannot tell.
func nodeSendBuffer(t transport, want int) int {
	ut, ok := t.(*unixTransport)
	if !ok {
		return 0
	}
	ut.c.SetWriteBuffer(want) // best effort: the size read back is what counts
	rc, err := ut.c.SyscallConn()
	if err != nil {
		return 0
	}
	size := 0
	rc.Control(func(fd uintptr) {
		size, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	return size
}
