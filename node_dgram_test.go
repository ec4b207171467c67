package clusternet

// Node's test-dgram-cluster-close-during-bind: a worker's UDP socket is
// closed while the primary binds it for the worker. Node closes the socket
// before its request goes (by wrapping cluster._getServer); the primary
// answers with a handle (err 0), which the worker, finding its socket
// closed, closes; the socket never binds; the worker then disconnects.
//
// In Go the socket is not there before the bind: its counterpart is a
// ListenConfig.ListenPacket whose context has ended. The context is
// cancelled before the call (Node's socket.close() before _getServer), and
// the primary's AllowListen holds the bind until the worker's call has
// returned, so the answer comes after the worker gave up, as in Node.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func init() {
	helpers["node-dgram-close-during-bind"] = func() {
		// Warm up: the descriptors the runtime opens for its first socket
		// are not the handle's.
		warm, err := ListenPacket("udp", "127.0.0.1:0")
		nodeCheck(err == nil, "ListenPacket(udp): %v", err)
		warm.Close()
		before, err := countFDs()
		nodeCheck(err == nil, "countFDs: %v", err)

		ctx, cancel := context.WithCancel(context.Background())
		cancel() // socket.close(), before the request goes
		var lc ListenConfig
		pc, err := lc.ListenPacket(ctx, "udp4", "127.0.0.1:0")
		// socket.bind(common.mustNotCall('Socket should not bind.'))
		nodeCheck(pc == nil && errors.Is(err, context.Canceled), "ListenPacket with its context cancelled: %v, %v; want context.Canceled", pc, err)

		// The answer comes now (the primary waits for this line). Holding
		// the listens' lock keeps this worker's reader from acting on it
		// once it has read it: the handle it carries is then open here,
		// which says the primary granted the listen (Node: err 0, a
		// handle).
		ls := &Self().listeners
		ls.mu.Lock()
		fmt.Println("cancelled")
		deadline := time.Now().Add(testTimeout)
		for {
			n, err := countFDs()
			nodeCheck(err == nil, "countFDs: %v", err)
			if n > before {
				break
			}
			nodeCheck(time.Now().Before(deadline), "the primary's answer to the cancelled listen brought no handle")
			time.Sleep(time.Millisecond)
		}
		ls.mu.Unlock()

		// The primary answers one worker's requests in order: once this
		// listen has its answer, the reader has acted on the first one's,
		// whose handle must be closed (Node's handle.close, mustCall).
		pc, err = ListenPacket("udp", "127.0.0.1:0")
		nodeCheck(err == nil, "ListenPacket(udp) after the cancelled one: %v", err)
		pc.Close()
		after, err := countFDs()
		nodeCheck(err == nil && after <= before, "%d descriptors open after the cancelled listen, %d before: the handle the primary sent is open", after, before)
		Self().Disconnect()
		select {}
	}
}

// nodeLineWatch is a worker's standard output that closes seen once a line
// is want.
type nodeLineWatch struct {
	want string
	mu   sync.Mutex
	buf  bytes.Buffer
	once sync.Once
	seen chan struct{}
}

func (l *nodeLineWatch) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if strings.Contains("\n"+l.buf.String(), "\n"+l.want+"\n") {
		l.once.Do(func() { close(l.seen) })
	}
	return len(p), nil
}

// TestNodeDgramClusterCloseDuringBind is test-dgram-cluster-close-during-bind:
// the primary binds the worker's UDP address and grants it (err 0: the worker
// receives a handle) after the worker gave up; the worker's listen never
// succeeds (no listening event
// for it), the handle the primary sent is closed, and the worker disconnects
// and exits with code 0. Beyond Node: the primary's socket is closed once
// the worker gave it back, and none of its descriptors is left.
func TestNodeDgramClusterCloseDuringBind(t *testing.T) {
	require(t, "udp")
	fds := openFDs(t)
	watch := &nodeLineWatch{want: "cancelled", seen: make(chan struct{})}
	var held atomic.Bool
	s := CurrentSettings()
	s.Stdout = watch
	s.AllowListen = func(_ *Worker, network, address string) error {
		if network == "udp4" {
			// The primary is binding: hold it until the worker's
			// ListenPacket has returned.
			select {
			case <-watch.seen:
				held.Store(true)
			case <-time.After(testTimeout):
			}
		}
		return nil
	}
	withSettings(t, s)
	w, ev := nodeFork(t, nil, "node-dgram-close-during-bind")
	events := nodeEvents(t, w, ev)
	nodeWantExit(t, w, 0)
	if !held.Load() {
		t.Error("the primary was not asked for udp4 127.0.0.1:0 while the worker gave up on it")
	}
	for _, e := range events {
		if e.kind == "listening" && e.addr.Network == "udp4" {
			t.Errorf("listening event for the cancelled listen: %+v", e.addr)
		}
	}
	if !w.ExitedAfterDisconnect() {
		t.Error("the worker did not leave by disconnecting")
	}
	if sa := lnSharedAddr("udp4", "127.0.0.1:0"); sa != nil {
		t.Error("the primary still holds udp4 127.0.0.1:0")
	}
	fdsAtMost(t, fds, "after the worker")
	if t.Failed() {
		watch.mu.Lock()
		t.Logf("the worker's output: %q", watch.buf.String())
		watch.mu.Unlock()
	}
}
