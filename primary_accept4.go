//go:build (linux && (386 || s390x)) || freebsd || dragonfly || illumos

package clusternet

import "golang.org/x/sys/unix"

// accept accepts a connection in blocking mode: see accept4_linux.go.
func accept(fd int) (int, error) {
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	return nfd, err
}
