package clusternet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"testing"
)

// TestListenOutsideWorker: in the primary (or any process that is not a
// worker) Listen and ListenPacket are net.Listen and net.ListenPacket.
func TestListenOutsideWorker(t *testing.T) {
	if IsWorker() {
		t.Fatal("the test process is a worker")
	}
	t.Run("tcp", func(t *testing.T) {
		ln, err := Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		nl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer nl.Close()
		if reflect.TypeOf(ln) != reflect.TypeOf(nl) {
			t.Errorf("Listen returned a %T; net.Listen returns a %T", ln, nl)
		}
		lnCheckAddr(t, "tcp4", "127.0.0.1:0", ln.Addr().String())

		// Accepted connections are the net package's, and Close unblocks Accept.
		accepted := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				if _, ok := c.(*net.TCPConn); !ok {
					err = fmt.Errorf("Accept returned a %T, want *net.TCPConn", c)
				}
				c.Close()
			}
			accepted <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := recv(t, accepted, "Accept"); err != nil {
			t.Error(err)
		}
		go func() { _, err := ln.Accept(); accepted <- err }()
		ln.Close()
		if err := recv(t, accepted, "Accept to return after Close"); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}

		// Errors are net.Listen's.
		_, err = Listen("tcp4", nl.Addr().String())
		_, nerr := net.Listen("tcp4", nl.Addr().String())
		if !lnAddrInUse(err) || lnErrString(err) != lnErrString(nerr) {
			t.Errorf("Listen on a taken address: %v; net.Listen: %v", err, nerr)
		}
	})
	t.Run("networks", func(t *testing.T) {
		// What net.Listen refuses, Listen refuses with the same error; what it
		// accepts, Listen accepts.
		for _, c := range []struct{ network, address string }{
			{"udp", "127.0.0.1:0"},
			{"bogus", "127.0.0.1:0"},
			{"tcp4", "[::1]:0"},
			{"tcp", "127.0.0.1:-1"},
		} {
			ln, err := Listen(c.network, c.address)
			nl, nerr := net.Listen(c.network, c.address)
			if ln != nil {
				ln.Close()
			}
			if nl != nil {
				nl.Close()
			}
			if lnErrString(err) != lnErrString(nerr) {
				t.Errorf("Listen(%q, %q): %v; net.Listen: %v", c.network, c.address, err, nerr)
			}
		}
		for _, c := range []struct{ network, address string }{
			{"tcp", "127.0.0.1:0"},
			{"ip4:icmp", "127.0.0.1"},
			{"bogus", "127.0.0.1:0"},
		} {
			pc, err := ListenPacket(c.network, c.address)
			npc, nerr := net.ListenPacket(c.network, c.address)
			if pc != nil {
				pc.Close()
			}
			if npc != nil {
				npc.Close()
			}
			if lnErrString(err) != lnErrString(nerr) {
				t.Errorf("ListenPacket(%q, %q): %v; net.ListenPacket: %v", c.network, c.address, err, nerr)
			}
		}
	})
	t.Run("unix", func(t *testing.T) {
		require(t, "unix")
		for _, network := range []string{"unix", "unixpacket"} {
			// What net.Listen can do here, Listen does the same way.
			path := lnSockPath(t)
			nl, nerr := net.Listen(network, path)
			if nl != nil {
				nl.Close()
			}
			ln, err := Listen(network, path)
			if nerr != nil || err != nil {
				if lnErrString(err) != lnErrString(nerr) {
					t.Errorf("Listen(%q): %v; net.Listen: %v", network, err, nerr)
				}
				if ln != nil {
					ln.Close()
				}
				continue
			}
			if reflect.TypeOf(ln) != reflect.TypeOf(nl) {
				t.Errorf("Listen(%q) returned a %T; net.Listen returns a %T", network, ln, nl)
			}
			if ln.Addr().String() != path {
				t.Errorf("Addr() = %q, want %q", ln.Addr(), path)
			}
			ln.Close()
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s socket file after Close: %v, want it removed as net.Listen's is", network, err)
			}
		}
		path := lnSockPath(t)
		npc, nerr := net.ListenPacket("unixgram", path)
		if npc != nil {
			npc.Close()
			os.Remove(path)
		}
		pc, err := ListenPacket("unixgram", path)
		if pc != nil {
			pc.Close()
		}
		if lnErrString(err) != lnErrString(nerr) {
			t.Errorf(`ListenPacket("unixgram"): %v; net.ListenPacket: %v`, err, nerr)
		}
	})
	t.Run("udp", func(t *testing.T) {
		require(t, "udp")
		pc, err := ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if _, ok := pc.(*net.UDPConn); !ok {
			t.Errorf("ListenPacket returned a %T, want *net.UDPConn", pc)
		}
		lnCheckAddr(t, "udp4", "127.0.0.1:0", pc.LocalAddr().String())
		_, err = ListenPacket("udp4", pc.LocalAddr().String())
		_, nerr := net.ListenPacket("udp4", pc.LocalAddr().String())
		if !lnAddrInUse(err) || lnErrString(err) != lnErrString(nerr) {
			t.Errorf("ListenPacket on a taken address: %v; net.ListenPacket: %v", err, nerr)
		}
	})
}
