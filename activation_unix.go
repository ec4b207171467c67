//go:build unix

package clusternet

// Shared: finding the sockets a service manager passed (Unix).

import (
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// inheritActivatedSockets takes the sockets passed by systemd's convention
// and removes its variables from the environment, so that workers and other
// children do not take them for theirs. Workers never inherit the sockets
// themselves: they are close-on-exec from here on.
//
// A primary that Upgrade started takes its sockets from the old primary
// instead (primary_upgrade_unix.go), socket activation's among them.
func inheritActivatedSockets() []*activatedSocket {
	if socks, ok := inheritUpgrade(); ok {
		return socks
	}
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n <= 0 || pid != strconv.Itoa(os.Getpid()) {
		return nil
	}
	nameList := strings.Split(names, ":")
	var socks []*activatedSocket
	for i := range n {
		fd := 3 + i // SD_LISTEN_FDS_START
		unix.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(nameList) && nameList[i] != "" {
			name = nameList[i]
		}
		if s, err := activatedFromFD(fd, name); err == nil {
			socks = append(socks, s)
		}
	}
	return socks
}

// activatedFromFD wraps an inherited socket descriptor, which it closes.
func activatedFromFD(fd int, name string) (*activatedSocket, error) {
	s := &activatedSocket{name: name}
	f := os.NewFile(uintptr(fd), name)
	var err error
	if s.ln, err = net.FileListener(f); err != nil {
		s.pc, err = net.FilePacketConn(f)
	}
	f.Close() // the net types hold their own copies
	if err != nil {
		return nil, err
	}
	return s, nil
}
