//go:build unix

package clusternet

// Runs in the primary: the system's part of Node workers on Unix, whose
// channel is the socket pair every worker has.

import (
	"os"

	"golang.org/x/sys/unix"
)

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

// nodeNonblock puts a connection the primary sends a Node worker in
// non-blocking mode. The SchedRR accept loop leaves connections blocking,
// which saves a Go worker two system calls; but libuv adopts a received
// descriptor in whatever mode it has (the mode belongs to the open file
// description, which the worker shares), and on a blocking socket a read
// past the data, or a write larger than the socket buffer to a slow
// client, stalls the worker's whole event loop. One fcntl per connection,
// the primary's only system call on it besides accept, sendmsg and close:
// 1.7 µs measured here (2 cores, loaded), about 1.5% of the primary's CPU
// per connection under SchedRR with Node workers.
func nodeNonblock(fd sysHandle) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	return nil
}

// nodeAcceptNow accepts up to limit connections waiting on the SchedRR
// socket sa polls, without waiting. A Node worker's reply frees its room
// on the reader's goroutine: accepting there, instead of waking the accept
// loop to do it, takes a goroutine switch off every connection under
// Node's flow control, where the next connection waits for that reply (in
// CPU profiles of bench/compare's gonode-rr, the accept loop's share of the
// primary's time went from 14% to 8%, accepts included).
func nodeAcceptNow(sa *sharedAddr, limit int) (hs []sysHandle) {
	if sa.polled == nil {
		return nil
	}
	rc, err := sa.polled.SyscallConn()
	if err != nil {
		return nil
	}
	rc.Control(func(fd uintptr) {
		for len(hs) < limit {
			nfd, err := accept(int(fd))
			switch err {
			case nil:
				hs = append(hs, nfd)
				continue
			case unix.EINTR, unix.ECONNABORTED:
				continue
			}
			return // EAGAIN, or an error the accept loop meets and handles
		}
	})
	return hs
}
