//go:build unix && !(linux || freebsd || dragonfly || illumos)

package clusternet

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// accept accepts without accept4: the descriptor is made close-on-exec under
// the fork lock, as the net package does on these systems.
func accept(fd int) (int, error) {
	syscall.ForkLock.RLock()
	nfd, _, err := unix.Accept(fd)
	if err == nil {
		unix.CloseOnExec(nfd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
}
