//go:build (linux && (386 || s390x)) || freebsd || dragonfly || illumos

package clusternet

import "golang.org/x/sys/unix"

func accept(fd int) (int, error) {
	nfd, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	return nfd, err
}
