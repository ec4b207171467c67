//go:build unix && !(linux || freebsd || dragonfly || illumos)

package clusternet

// Runs in the primary: accept for the SchedRR accept loop (no accept4).

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// accept accepts without accept4: the descriptor is made close-on-exec under
// the fork lock, as the net package does on these systems. Its mode is left
// as accept leaves it (non-blocking, like the listening socket, on the BSDs);
// see accept4_linux.go.
func accept(fd int) (int, error) {
	syscall.ForkLock.RLock()
	nfd, _, err := unix.Accept(fd)
	if err == nil {
		unix.CloseOnExec(nfd)
	}
	syscall.ForkLock.RUnlock()
	return nfd, err
}
