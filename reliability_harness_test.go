//go:build unix

package clusternet

// The fault tests (reliability_*_test.go): workers SIGKILLed under load,
// stuck workers, the primary killed, listeners closed under load, and a
// leak check over a long run. Every test runs on loopback, bounds its
// waits, and reaps every process it starts. This file has what they share:
// the "rel-serve" worker, the client that loads it, and the checks.
//
// The chaos test runs for a few seconds by default; -chaos.full (or
// CLUSTERNET_CHAOS_FULL=1) runs it for 30 s and the leak check over 100 000
// connections and 10 000 messages.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var chaosFull = flag.Bool("chaos.full", false, "run the chaos test for 30 s and the leak check over 100 000 connections")

func relFull() bool { return *chaosFull || os.Getenv("CLUSTERNET_CHAOS_FULL") == "1" }

func init() {
	helpers["rel-serve"] = relServe
}

// relServe serves one request per connection on REL_ADDR: it reads a line
// and answers "worker <id> <line>", then closes. REL_MODE changes that:
//
//	block       the handler reads the request and never answers
//	stopaccept  Accept is called REL_ACCEPTS times, then never again
//	flap        the listener is closed and opened again, over and over
//
// With REL_LOG, the accept loop appends "<unix nanoseconds> <client port>"
// to REL_LOG/<id>.log for every connection, before serving it. Messages
// are echoed.
func relServe() {
	self := Self()
	self.OnMessage(func(m Message) {
		var v any
		m.Decode(&v)
		self.Send(v)
	})
	network, addr, mode := os.Getenv("REL_NET"), os.Getenv("REL_ADDR"), os.Getenv("REL_MODE")
	if network == "" {
		network = "tcp4"
	}
	var logf *os.File
	if dir := os.Getenv("REL_LOG"); dir != "" {
		var err error
		logf, err = os.OpenFile(filepath.Join(dir, strconv.Itoa(self.ID())+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	delay, _ := time.ParseDuration(os.Getenv("REL_DELAY"))
	accepts := -1
	if mode == "stopaccept" {
		accepts, _ = strconv.Atoi(os.Getenv("REL_ACCEPTS"))
	}
	serve := func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		if mode == "block" {
			select {}
		}
		time.Sleep(delay)
		fmt.Fprintf(c, "worker %d %s", self.ID(), line)
	}
	acceptLoop := func(ln net.Listener) {
		for accepts != 0 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if logf != nil {
				fmt.Fprintf(logf, "%d %d\n", time.Now().UnixNano(), c.RemoteAddr().(*net.TCPAddr).Port)
			}
			if accepts > 0 {
				accepts--
			}
			go serve(c)
		}
		select {} // stopaccept: the listener stays open, unused
	}
	listen := func() net.Listener {
		ln, err := Listen(network, addr)
		if errors.Is(err, ErrChannelClosed) {
			select {} // leaving: the package exits
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "rel-serve:", err)
			os.Exit(1)
		}
		return ln
	}
	if mode != "flap" {
		acceptLoop(listen())
		select {} // closed by Disconnect: the package exits when it is done
	}
	for {
		ln := listen()
		done := make(chan struct{})
		go func() { acceptLoop(ln); close(done) }()
		time.Sleep(time.Duration(20+rand.IntN(80)) * time.Millisecond)
		ln.Close()
		<-done
	}
}

// relPolicies are the policies the fault tests run under, with the names
// of their subtests.
var relPolicies = []struct {
	name   string
	policy Policy
}{{"rr", SchedRR}, {"none", SchedNone}}

// relFork forks n rel-serve workers on addr and waits until they listen.
func relFork(t testing.TB, n int, addr string, env ...string) []*Worker {
	t.Helper()
	ws := make([]*Worker, n)
	for i := range ws {
		ws[i] = fork(t, "rel-serve", append([]string{"REL_ADDR=" + addr}, env...)...)
	}
	relWaitListening(t, ws...)
	return ws
}

// relWaitListening waits until every worker in ws has reported listening.
func relWaitListening(t testing.TB, ws ...*Worker) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for _, w := range ws {
		for len(w.listenedAddresses()) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("worker %d did not listen", w.ID())
			}
			select {
			case <-w.Done():
				t.Fatalf("worker %d exited before listening", w.ID())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// relResult is what a client saw of its connections.
type relResult struct {
	mu         sync.Mutex
	opened     int // connections established
	served     int // answered in full
	failed     int // established, not answered
	dialFailed int
	servedBy   map[int]int
	failures   []relFailure
	dialErrs   []string
}

type relFailure struct {
	port       int
	start, end time.Time
	err        string
}

func (r *relResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("opened %d, served %d, failed %d, dial errors %d", r.opened, r.served, r.failed, r.dialFailed)
}

func (r *relResult) done() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served + r.failed + r.dialFailed
}

var relSeq atomic.Int64

// relRequest opens one connection to addr, sends a request and reads the
// answer, and records the outcome in r.
func relRequest(r *relResult, addr string, timeout time.Duration) {
	start := time.Now()
	c, err := net.DialTimeout("tcp4", addr, timeout)
	if err != nil {
		r.mu.Lock()
		r.dialFailed++
		if len(r.dialErrs) < 10 {
			r.dialErrs = append(r.dialErrs, err.Error())
		}
		r.mu.Unlock()
		return
	}
	defer c.Close()
	r.mu.Lock()
	r.opened++
	r.mu.Unlock()
	port := c.LocalAddr().(*net.TCPAddr).Port
	c.SetDeadline(time.Now().Add(timeout))
	id := relSeq.Add(1)
	fail := func(err error) {
		r.mu.Lock()
		r.failed++
		r.failures = append(r.failures, relFailure{port: port, start: start, end: time.Now(), err: err.Error()})
		r.mu.Unlock()
	}
	if _, err := fmt.Fprintf(c, "%d\n", id); err != nil {
		fail(err)
		return
	}
	b, err := io.ReadAll(io.LimitReader(c, 256))
	var wid int
	var got int64
	if n, _ := fmt.Sscanf(string(b), "worker %d %d\n", &wid, &got); n != 2 || got != id {
		if err == nil {
			err = fmt.Errorf("answer %q", b)
		}
		fail(err)
		return
	}
	r.mu.Lock()
	r.served++
	if r.servedBy == nil {
		r.servedBy = make(map[int]int)
	}
	r.servedBy[wid]++
	r.mu.Unlock()
}

// relLoad opens connections to addr from conc goroutines, one request each,
// until ctx ends or limit connections were tried (limit <= 0: no limit).
func relLoad(ctx context.Context, addr string, conc, limit int, timeout time.Duration) (*relResult, <-chan struct{}) {
	r := &relResult{}
	var tried atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil && (limit <= 0 || tried.Add(1) <= int64(limit)) {
				relRequest(r, addr, timeout)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return r, done
}

// relLogged reads the accept logs of the workers in ids: client port to the
// times it was accepted.
func relLogged(t testing.TB, dir string, ids []int) map[int][]time.Time {
	t.Helper()
	m := make(map[int][]time.Time)
	for _, id := range ids {
		b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(id)+".log"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var ns int64
			var port int
			if n, _ := fmt.Sscanf(line, "%d %d", &ns, &port); n == 2 {
				m[port] = append(m[port], time.Unix(0, ns))
			}
		}
	}
	return m
}

// relServes checks that addr still serves a request.
func relServes(t testing.TB, addr string) {
	t.Helper()
	r := &relResult{}
	relRequest(r, addr, testTimeout)
	if r.served != 1 {
		t.Fatalf("the cluster no longer serves %s: %v %v %v", addr, r, r.failures, r.dialErrs)
	}
}

// relStopAll disconnects every worker and waits until they are gone.
func relStopAll(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := Disconnect(ctx); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
}
