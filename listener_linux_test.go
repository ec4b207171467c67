//go:build linux

package clusternet

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// lnFDCount returns the number of descriptors this process has open.
func lnFDCount() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	return len(ents), err
}

// lnFDList describes this process's open descriptors, for failure messages.
func lnFDList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

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
