//go:build unix && !linux

package clusternet

// Runs in the primary: sending connections over a handoff socket (the other
// Unix systems).

import "golang.org/x/sys/unix"

// ioctlReadable is FIONREAD: the bytes waiting to be read in a socket. It is
// _IOR('f', 127, int) on the BSDs, macOS, Solaris and AIX alike; x/sys/unix
// does not export it for them.
const ioctlReadable = 0x4004667f

// sendConns sends conns over a handoff socket, one record each (records[i]
// with conns[i]), closes those it sent and returns how many. It does not
// wait: a full socket ends the batch (EAGAIN).
func sendConns(out int, conns []int, records []byte) (int, error) {
	for i, fd := range conns {
		var err error = unix.EINTR
		for err == unix.EINTR {
			err = unix.Sendmsg(out, records[i:i+1], unix.UnixRights(fd), nil, 0)
		}
		if err != nil {
			return i, err
		}
		unix.Close(fd) // in flight: not the last close
	}
	return len(conns), nil
}
