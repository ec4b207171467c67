//go:build unix

package clusternet

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dupHandle returns a close-on-exec duplicate of h's descriptor, taken
// through SyscallConn so that h keeps its blocking mode.
func dupHandle(h any) (sysHandle, error) {
	sc, ok := h.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%w: a %T has no descriptor to send", ErrInvalidHandle, h)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("%w: %v", ErrInvalidHandle, err)
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, fmt.Errorf("%w: %v", ErrInvalidHandle, err)
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return nfd, nil
}

// handleFile wraps a received descriptor.
func fileFromHandle(h sysHandle, name string) *os.File {
	return os.NewFile(uintptr(h), name)
}
