//go:build unix

package clusternet

// Runs in the primary: the system calls of the SchedRR scheduler on Unix:
// accepting in batches, handoff sockets, counting and reading back queues.

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// acceptBatch waits for connections on a listening socket and accepts up to
// limit of them without waiting further. The descriptors are not registered
// with the runtime's poller: they are only passed on.
func acceptBatch(rc syscall.RawConn, limit int) ([]sysHandle, error) {
	var hs []sysHandle
	var aerr error
	err := rc.Read(func(fd uintptr) bool {
		for len(hs) < limit {
			nfd, err := accept(int(fd))
			switch err {
			case nil:
				hs = append(hs, nfd)
				continue
			case unix.EINTR, unix.ECONNABORTED:
				continue
			case unix.EAGAIN:
				return len(hs) > 0 // nothing accepted yet: wait for readiness
			}
			aerr = os.NewSyscallError("accept", err)
			return true
		}
		return true
	})
	if err == nil {
		err = aerr
	}
	return hs, err
}

// newHandoff makes a handoff socket (see rr.go): out is the primary's end,
// peer the worker's. Both are non-blocking and close-on-exec; out is shut for
// reading, so the worker cannot write to the primary through it.
func newHandoff() (out, peer sysHandle, err error) {
	fds, err := rawSocketPair()
	if err != nil {
		return -1, -1, err
	}
	for _, fd := range fds {
		if err == nil {
			err = os.NewSyscallError("setnonblock", unix.SetNonblock(fd, true))
		}
	}
	if err == nil {
		err = os.NewSyscallError("shutdown", unix.Shutdown(fds[0], unix.SHUT_RD))
	}
	if err != nil {
		closeHandles(fds[:])
		return -1, -1, err
	}
	return fds[0], fds[1], nil
}

// dupFD returns a close-on-exec duplicate of fd.
func dupFD(fd sysHandle) (sysHandle, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}

// queuedConns returns how many connections wait in a handoff socket: its
// unread bytes (FIONREAD), one per record.
func queuedConns(peer sysHandle) (int, error) {
	n, err := unix.IoctlGetInt(peer, ioctlReadable)
	if err != nil {
		return 0, os.NewSyscallError("ioctl", err)
	}
	return n, nil
}

// recvQueued reads every connection left in a handoff socket.
func recvQueued(peer sysHandle) []sysHandle {
	var hs []sysHandle
	b := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4*maxFrameHandles))
	for {
		// The descriptors arrive in this process: close-on-exec before
		// any fork can see them.
		syscall.ForkLock.RLock()
		n, oobn, _, _, err := unix.Recvmsg(peer, b, oob, 0)
		var got []sysHandle
		if oobn > 0 {
			got, _ = parseRights(oob[:oobn])
			for _, fd := range got {
				unix.CloseOnExec(fd)
			}
		}
		syscall.ForkLock.RUnlock()
		hs = append(hs, got...)
		switch {
		case err == unix.EINTR:
		case err != nil || n == 0 && oobn == 0:
			return hs // EAGAIN: empty
		}
	}
}
