//go:build (linux && (386 || s390x)) || freebsd || dragonfly || illumos

package clusternet

// Runs in the primary: accept for the SchedRR accept loop (accept4 through
// x/sys/unix).

import "golang.org/x/sys/unix"

// accept accepts a connection in blocking mode: see accept4_linux.go.
func accept(fd int) (int, error) {
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	return nfd, err
}
