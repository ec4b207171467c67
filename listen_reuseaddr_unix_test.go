//go:build unix

package clusternet

// ListenConfig.ReuseAddr, Node's dgram reuseAddr (test-cluster-dgram-reuse).

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
)

func init() {
	// dgram-reuse binds udp4 127.0.0.1:0 with ReuseAddr, then the port it
	// got twice more with ReuseAddr, and once without; it reports each
	// outcome, closes its sockets and disconnects itself, as Node's test.
	helpers["dgram-reuse"] = func() {
		lc := ListenConfig{ReuseAddr: true}
		ctx := context.Background()
		first, err := lc.ListenPacket(ctx, "udp4", "127.0.0.1:0")
		if err != nil {
			Self().Send("first: " + err.Error())
			select {}
		}
		port := first.LocalAddr().(*net.UDPAddr).Port
		at := "127.0.0.1:" + strconv.Itoa(port)
		var report []string
		var open []net.PacketConn
		for range 2 {
			pc, err := lc.ListenPacket(ctx, "udp4", at)
			if err != nil {
				report = append(report, err.Error())
				continue
			}
			open = append(open, pc)
			report = append(report, pc.LocalAddr().String())
		}
		var plain ListenConfig
		if pc, err := plain.ListenPacket(ctx, "udp4", at); err == nil {
			pc.Close()
			report = append(report, "without ReuseAddr: bound")
		} else {
			report = append(report, "without ReuseAddr: "+strconv.FormatBool(errors.Is(err, syscall.EADDRINUSE)))
		}
		report = append(report, at)
		Self().Send(report)
		for _, pc := range open {
			pc.Close()
		}
		first.Close()
		Self().Disconnect()
		select {}
	}
}

func TestListenPacketReuseAddr(t *testing.T) {
	w := fork(t, "dgram-reuse")
	in := messages(w)
	var report []string
	if err := recv(t, in, "the worker's report").Decode(&report); err != nil {
		t.Fatal(err)
	}
	if len(report) != 4 {
		t.Fatalf("report %q", report)
	}
	at := report[3]
	if report[0] != at || report[1] != at {
		t.Errorf("two more ReuseAddr sockets on %s: %q, %q; want both bound there", at, report[0], report[1])
	}
	if report[2] != "without ReuseAddr: true" {
		t.Errorf("a socket without ReuseAddr on %s: %q, want EADDRINUSE", at, report[2])
	}
	waitDone(t, w)
	if st := w.exitStatus(); st.Code != 0 || !w.ExitedAfterDisconnect() {
		t.Errorf("worker exited with %v, after disconnect %v; want 0, true", st, w.ExitedAfterDisconnect())
	}
	if n := Stats().Servers; n != 0 {
		t.Errorf("%d shared addresses left after the worker closed its sockets", n)
	}
}
