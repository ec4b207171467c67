//go:build linux

package clusternet

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// lnBacklog returns the accept queue length a listening TCP socket was given:
// for a socket in LISTEN state Linux reports it as tcpi_sacked.
func lnBacklog(rc syscall.RawConn) (int, error) {
	var info *unix.TCPInfo
	var err error
	if cerr := rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, err
	}
	return int(info.Sacked), nil
}

// lnReusePort reports whether a socket has SO_REUSEPORT set.
func lnReusePort(rc syscall.RawConn) (bool, error) {
	var v int
	var err error
	if cerr := rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT) }); cerr != nil {
		return false, cerr
	}
	return v != 0, err
}
