//go:build linux

package clusternet

// Runs in a worker, on Linux: whether a byte ever arrived on one of
// ServeHTTP's connections, from the kernel's count (TCP_INFO).

import (
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// neverReceived tells whether a byte ever arrived on c, from the kernel's
// count, and for a connection on which none did, its retransmission
// timeout: the time a first segment lost on the way takes to be sent again.
// Over TLS only "nothing" tells anything: the bytes of a handshake are no
// request.
func neverReceived(c net.Conn) (arrival, time.Duration) {
	wrapped := false
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c, wrapped = u.NetConn(), true
	}
	tc, ok := c.(*net.TCPConn)
	if !ok || !tcpInfoCounts() {
		return unknown, 0
	}
	info, ok := tcpInfo(tc)
	switch {
	case !ok:
		return unknown, 0
	case info.Bytes_received == 0:
		return nothing, time.Duration(info.Rto) * time.Microsecond
	case wrapped:
		return unknown, 0
	}
	return received, 0
}

// tcpInfo returns c's TCP_INFO.
func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return nil, false
	}
	return info, true
}

// tcpInfoCounts reports whether this kernel fills tcpi_bytes_received, by
// sending one byte over loopback and asking. Linux has since 4.1; an older
// kernel returns a shorter struct, and an emulation (gVisor) may leave the
// field out, which would make every connection look unused. Asked once,
// at the first drain that needs it.
var tcpInfoCounts = sync.OnceValue(func() bool {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		if ln, err = net.Listen("tcp", "[::1]:0"); err != nil {
			return false
		}
	}
	defer ln.Close()
	deadline := time.Now().Add(time.Second)
	ln.(*net.TCPListener).SetDeadline(deadline)
	c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return false
	}
	defer s.Close()
	s.SetDeadline(deadline)
	if info, ok := tcpInfo(s.(*net.TCPConn)); !ok || info.Bytes_received != 0 {
		return false
	}
	if _, err := c.Write([]byte{1}); err != nil {
		return false
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		return false
	}
	info, ok := tcpInfo(s.(*net.TCPConn))
	return ok && info.Bytes_received == 1
})
