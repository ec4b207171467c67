//go:build linux && !386 && !s390x

package clusternet

// Runs in the primary: accept for the SchedRR accept loop (a raw accept4).

import "golang.org/x/sys/unix"

// accept is accept4 without the peer's address, which the primary has no
// use for: unix.Accept4 copies it out, allocates it and, for IPv4, asks for
// the socket's protocol with a second system call (getsockopt SO_PROTOCOL)
// on every connection.
//
// The connection stays in blocking mode: the primary never reads or writes
// it, and the worker adopts a blocking descriptor with two system calls
// fewer (os.NewFile registers a non-blocking one with the poller, and
// net.FileConn unregisters it again); net.FileConn makes it non-blocking.
func accept(fd int) (int, error) {
	// Raw: the socket is non-blocking, so accept4 does not block, and the
	// scheduler need not know about it (entering a system call wakes the
	// runtime's monitor thread when it sleeps: a futex call each time).
	nfd, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}
