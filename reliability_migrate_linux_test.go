package clusternet

// SchedReusePort where the kernel moves the queue of a closing socket to
// the others (net.ipv4.tcp_migrate_req = 1): the primary closes the socket
// of a worker that leaves instead of retiring it, and loses nothing. The
// setting is per network namespace: the primary (role migrate-primary) runs
// in one of its own, whose only interface is loopback, and turns it on
// there, which needs root (CI runs as root). It says "fail: why" for each
// failed assertion, "skip: why" if the kernel has no such setting, then
// "done".

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

func init() {
	primaries["migrate-primary"] = migratePrimary
}

func migratePrimary() {
	defer fmt.Println("done")
	fail := func(format string, args ...any) { fmt.Printf("fail: "+format+"\n", args...) }
	if err := loopbackUp(); err != nil {
		fail("bringing up lo: %v", err)
		return
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte("1"), 0); err != nil {
		fmt.Println("skip: net.ipv4.tcp_migrate_req (Linux 5.14 and later):", err)
		return
	}
	if err := SetSchedulingPolicy(SchedReusePort); err != nil {
		fail("%v", err)
		return
	}
	const addr = "127.0.0.1:12347" // free: the namespace is this primary's
	var ws []*Worker
	for range 3 {
		w, err := Fork(envHelper+"=rel-serve", "REL_ADDR="+addr)
		if err != nil {
			fail("Fork: %v", err)
			return
		}
		ws = append(ws, w)
	}
	for _, w := range ws {
		for deadline := time.Now().Add(testTimeout); len(w.listenedAddresses()) == 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				fail("worker %d did not listen", w.ID())
				return
			}
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	load, loaded := relLoad(ctx, addr, 4, 0, testTimeout)
	for _, w := range ws[:2] {
		time.Sleep(200 * time.Millisecond)
		w.Disconnect()
		<-w.Done()
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	<-loaded
	st := Stats()
	fmt.Printf("log: 2 of 3 workers disconnected under load: %v; queues kept by the %s, %d sockets retired\n", load, st.ReusePortQueues, st.Retired)
	if load.failed != 0 || load.dialFailed != 0 || load.served == 0 {
		fail("disconnecting under load: %v; %v %v", load, load.failures, load.dialErrs)
	}
	if st.ReusePortQueues != "kernel" || st.Retired != 0 {
		fail("Stats says the queues are kept by the %q, with %d sockets retired; want the kernel, and none", st.ReusePortQueues, st.Retired)
	}
	ws[2].Disconnect()
	<-ws[2].Done()
}

func TestReusePortKernelMigration(t *testing.T) {
	netnsPrimary(t, "sets net.ipv4.tcp_migrate_req in a network namespace of its own", "migrate-primary")
}
