//go:build linux

package clusternet

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// A worker listens on a host name whose lookup never ends (a resolver
// that does not answer): the other workers' listens, and forks, go on
// meanwhile. The lookup holds up only the worker that asked.
func TestListenSlowLookupStallsNoOne(t *testing.T) {
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	r := net.DefaultResolver
	prefer, dial := r.PreferGo, r.Dial
	r.PreferGo = true
	r.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		select {
		case asked <- struct{}{}:
		default:
		}
		<-release // ctx's deadline too: only the test ends the lookup
		return nil, errors.New("the test's resolver answers nothing")
	}
	var released bool
	unblock := func() {
		if !released {
			released = true
			close(release)
		}
	}
	t.Cleanup(func() { r.PreferGo, r.Dial = prefer, dial })
	a := fork(t, "sec-worker")
	aIn := messages(a)
	b := fork(t, "sec-worker")
	bIn := messages(b)
	t.Cleanup(unblock) // before the workers are reaped: that may need the lock
	if err := a.Send(secRequest{Op: "listen", Network: "tcp", Address: "slow.clusternet.test:0"}); err != nil {
		t.Fatal(err)
	}
	recv(t, asked, "worker 1's lookup to reach the resolver")

	if rep := ask[secReply](t, b, bIn, secRequest{Op: "listen", Network: "tcp4", Address: "127.0.0.1:0"}); rep.Err != "" {
		t.Fatalf("worker 2's listen while worker 1's lookup hangs: %s", rep.Err)
	}
	c := fork(t, "echo")
	cIn := messages(c)
	echo(t, c, cIn, 1)

	unblock()
	var rep secReply
	if err := recv(t, aIn, "worker 1's listen to fail").Decode(&rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rep.Err, "slow.clusternet.test") {
		t.Errorf("worker 1's listen on a name that does not resolve: %q; want the lookup's error", rep.Err)
	}
}
