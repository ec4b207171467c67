package clusternet

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
)

// neverReceived tells a TCP connection on which nothing arrived from one on
// which a byte did; through TLS it tells only the first; of a Unix socket
// it cannot tell.
func TestNeverReceived(t *testing.T) {
	if !tcpInfoCounts() {
		t.Skip("this kernel does not count the bytes a TCP connection received")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wrapped := tls.Server(s, &tls.Config{})
	for _, tc := range []net.Conn{s, wrapped} {
		if got, grace := neverReceived(tc); got != nothing || grace <= 0 {
			t.Errorf("%T, nothing sent: neverReceived = %v, %v; want %v and the retransmission timeout", tc, got, grace, nothing)
		} else {
			t.Logf("%T: nothing received; retransmission timeout %v", tc, grace)
		}
	}
	c.Write([]byte("G"))
	if _, err := s.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// Over TLS, bytes that arrived may be only a handshake.
	for tc, want := range map[net.Conn]arrival{s: received, wrapped: unknown} {
		if got, _ := neverReceived(tc); got != want {
			t.Errorf("%T, one byte sent and read: neverReceived = %v, want %v", tc, got, want)
		}
	}

	path := filepath.Join(t.TempDir(), "s")
	uln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	uc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if got, _ := neverReceived(uc); got != unknown {
		t.Errorf("Unix socket: neverReceived = %v, want %v", got, unknown)
	}
}
