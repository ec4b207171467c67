package clusternet

// Runs in the primary: sending connections over a handoff socket (Linux:
// one sendmmsg per batch).

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlReadable is FIONREAD: the bytes waiting to be read in a socket.
const ioctlReadable = unix.SIOCINQ

// mmsghdr is struct mmsghdr of sendmmsg(2), which x/sys/unix does not define.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// sendConns sends conns over a handoff socket, one record each (records[i]
// with conns[i]), in one system call, closes those it sent and returns how
// many. It does not wait: a full socket ends the batch (EAGAIN).
func sendConns(out int, conns []int, records []byte) (sent int, err error) {
	space := unix.CmsgSpace(4)
	header := unix.UnixRights(0)
	oob := make([]byte, len(conns)*space)
	msgs := make([]mmsghdr, len(conns))
	iovs := make([]unix.Iovec, len(conns))
	for i, fd := range conns {
		rights := oob[i*space : (i+1)*space]
		copy(rights, header)
		binary.NativeEndian.PutUint32(rights[unix.CmsgLen(0):], uint32(fd))
		iovs[i].Base = &records[i]
		iovs[i].SetLen(1)
		h := &msgs[i].hdr
		h.Iov = &iovs[i]
		h.SetIovlen(1)
		h.Control = &rights[0]
		h.SetControllen(len(rights))
	}
	for sent < len(msgs) {
		// Raw, as accept: on a non-blocking socket sendmmsg does not block.
		n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(out), uintptr(unsafe.Pointer(&msgs[sent])), uintptr(len(msgs)-sent), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			err = errno
			break
		}
		sent += int(n)
	}
	// The kernel holds the connections in flight: closing the primary's
	// copies is quick, and never the last close.
	for _, fd := range conns[:sent] {
		unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	}
	return sent, err
}
