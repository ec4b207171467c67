//go:build unix

// These examples need what Windows, or Wine where its tests run, lacks:
// round-robin handoff (SchedRR) and UDP.

package clusternet_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/clusternet-go/clusternet"
)

// The primary binds a UDP address once and shares the socket with every
// worker that asks for it; datagrams are never handed out round-robin.
//
// The "ex-udp" worker is, in a program of your own:
//
//	pc, err := clusternet.ListenPacket("udp", "127.0.0.1:0")
//	if err != nil {
//		log.Fatal(err)
//	}
//	buf := make([]byte, 1500)
//	for {
//		n, from, err := pc.ReadFrom(buf)
//		if errors.Is(err, net.ErrClosed) {
//			select {} // disconnected: the package ends the process
//		}
//		if err != nil {
//			log.Fatal(err)
//		}
//		pc.WriteTo(bytes.ToUpper(buf[:n]), from)
//	}
func ExampleListenPacket() {
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()
	defer clusternet.Disconnect(ctx)

	w, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=ex-udp")
	if err != nil {
		fmt.Println(err)
		return
	}
	addrs := make(chan clusternet.Address, 1)
	w.OnListening(func(a clusternet.Address) { addrs <- a })
	var addr clusternet.Address
	select {
	case addr = <-addrs:
	case <-ctx.Done():
		fmt.Println("timed out")
		return
	}
	fmt.Println("the worker reads from", addr.Network, addr.Type)

	c, err := net.Dial("udp", addr.String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(exampleTimeout))
	c.Write([]byte("ping"))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("reply: %s\n", buf[:n])
	// Output:
	// the worker reads from udp udp4
	// reply: PING
}

// Stats counts, for every worker, the connections the primary handed it
// (under SchedRR, the default on Unix) and those it accepted.
//
// The "ex-http" worker (see ExampleListen) serves HTTP on a loopback port.
func ExampleStats() {
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()
	defer clusternet.Disconnect(ctx)

	w, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=ex-http")
	if err != nil {
		fmt.Println(err)
		return
	}
	addrs := make(chan clusternet.Address, 1)
	w.OnListening(func(a clusternet.Address) { addrs <- a })
	var addr clusternet.Address
	select {
	case addr = <-addrs:
	case <-ctx.Done():
		fmt.Println("timed out")
		return
	}
	// Three requests, each on a connection of its own.
	client := &http.Client{Timeout: exampleTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		resp, err := client.Get("http://" + addr.String() + "/")
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
	}

	st := clusternet.Stats()
	fmt.Println("workers:", st.Workers, "shared addresses:", st.Servers)
	for _, ws := range st.PerWorker {
		fmt.Printf("worker: handed %d, accepted %d, in flight %d\n", ws.Handed, ws.Accepted, ws.InFlight)
	}
	// Output:
	// workers: 1 shared addresses: 1
	// worker: handed 3, accepted 3, in flight 0
}
