//go:build unix

package clusternet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	helpers["fdl-serve"] = fdlServe
	helpers["fdl-lost"] = fdlLost
}

// fdlReport is what an fdl-serve worker says of itself when asked.
type fdlReport struct {
	Held       int64  // "hold" requests it is holding
	Temporary  int64  // temporary errors its Accept returned
	AcceptErr  string // the error that ended its accept loop
	Errors     int64  // error events (a connection lost is one)
	FirstError string
	Handed     uint64 // Self().Stats()
	Accepted   uint64
	ClientOpen bool // fdl-lost: the client's end of the lost connection is still open
}

// fdlServe serves on FDL_ADDR as rel-serve does: it reads a line, answers
// "worker <id> <line>" and closes; a "hold" line is answered only once the
// primary sends "release". Its accept loop backs off from temporary errors
// as net/http's Serve does (5 ms, doubling, at most 1 s). With FDL_SLOTS,
// it lowers its descriptor limit, soft and hard, to what it has open once
// it listens plus FDL_SLOTS. It sends "ready" once it is set; "report" gets
// an fdlReport.
func fdlServe() {
	self := Self()
	release := make(chan struct{})
	var releaseOnce sync.Once
	var held, temporary, errCount atomic.Int64
	var mu sync.Mutex
	var acceptErr, firstErr string
	self.OnError(func(err error) {
		if errCount.Add(1) == 1 {
			mu.Lock()
			firstErr = err.Error()
			mu.Unlock()
		}
	})
	self.OnMessage(func(m Message) {
		var cmd string
		m.Decode(&cmd)
		switch cmd {
		case "release":
			releaseOnce.Do(func() { close(release) })
		case "report":
			st := self.Stats()
			mu.Lock()
			r := fdlReport{Held: held.Load(), Temporary: temporary.Load(), AcceptErr: acceptErr,
				Errors: errCount.Load(), FirstError: firstErr, Handed: st.Handed, Accepted: st.Accepted}
			mu.Unlock()
			self.Send(r)
		}
	})
	ln, err := Listen("tcp4", os.Getenv("FDL_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fdl-serve:", err)
		os.Exit(1)
	}
	if slots, _ := strconv.Atoi(os.Getenv("FDL_SLOTS")); slots > 0 {
		n, err := countFDs()
		if err == nil {
			err = fdlSetLimit(n + slots)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "fdl-serve: descriptor limit:", err)
			os.Exit(1)
		}
	}
	serve := func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		if line == "hold\n" {
			held.Add(1)
			<-release
		}
		fmt.Fprintf(c, "worker %d %s", self.ID(), line)
	}
	self.Send("ready")
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { // as net/http's Serve
				temporary.Add(1)
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			mu.Lock()
			acceptErr = err.Error()
			mu.Unlock()
			select {} // closed by Disconnect: the package exits when it is done
		}
		delay = 0
		go serve(c)
	}
}

// fdlHold opens a connection to addr that the worker holds until it is
// released (fdlServe), and records in r whether it was answered.
func fdlHold(r *relResult, addr string) {
	c, err := net.DialTimeout("tcp4", addr, testTimeout)
	if err != nil {
		r.mu.Lock()
		r.dialFailed++
		r.dialErrs = append(r.dialErrs, err.Error())
		r.mu.Unlock()
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	_, err = io.WriteString(c, "hold\n")
	var b []byte
	if err == nil {
		b, err = io.ReadAll(io.LimitReader(c, 256))
	}
	var wid int
	n, _ := fmt.Sscanf(string(b), "worker %d hold\n", &wid)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened++
	if n != 1 {
		if err == nil {
			err = fmt.Errorf("answer %q", b)
		}
		r.failed++
		r.failures = append(r.failures, relFailure{port: c.LocalAddr().(*net.TCPAddr).Port, err: err.Error()})
		return
	}
	r.served++
}

// TestRRFDLimit: under SchedRR, a worker at its descriptor limit loses no
// connection. One of two workers has room for 64 descriptors and is filled
// by connections it holds; then thousands of requests, one connection
// each: those handed to the full worker are taken back and served by the
// other, and every one is answered. Its Accept meanwhile returns temporary
// errors, as net.Listen's would at the limit.
func TestRRFDLimit(t *testing.T) {
	require(t, "rr")
	setPolicy(t, SchedRR)
	fds := openFDs(t)
	addr := freePort(t)
	full := fork(t, "fdl-serve", "FDL_ADDR="+addr, "FDL_SLOTS=64")
	other := fork(t, "fdl-serve", "FDL_ADDR="+addr)
	fullIn, otherIn := messages(full), messages(other)
	recv(t, fullIn, "the full worker to listen")
	recv(t, otherIn, "the other worker to listen")
	report := func(w *Worker, in <-chan Message) fdlReport { return ask[fdlReport](t, w, in, "report") }

	// More held connections than the full worker has room for: it holds
	// what it can, the other the rest.
	const holds = 200
	held := &relResult{}
	var holding sync.WaitGroup
	for range holds {
		holding.Go(func() { fdlHold(held, addr) })
	}
	deadline := time.Now().Add(testTimeout)
	for {
		rf, ro := report(full, fullIn), report(other, otherIn)
		if rf.Held+ro.Held+int64(held.done()) >= holds {
			t.Logf("held: %d by the full worker, %d by the other; %v", rf.Held, ro.Held, held)
			if rf.Held == 0 {
				t.Fatal("the full worker holds no connection")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("held: %d by the full worker, %d by the other, %v; want %d", rf.Held, ro.Held, held, holds)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The full worker sits at its limit: every connection handed to it
	// must go back to the other.
	const total = 3000
	start := time.Now()
	res, loadDone := relLoad(context.Background(), addr, 16, total, testTimeout)
	recv(t, loadDone, "the requests")
	took := time.Since(start)

	for _, w := range []*Worker{full, other} {
		if err := w.Send("release"); err != nil {
			t.Fatal(err)
		}
	}
	holding.Wait()
	rf, ro := report(full, fullIn), report(other, otherIn)
	t.Logf("%d requests in %v: %v, served by worker: %v; the full worker: %+v, %d taken back from it; the other: %+v",
		total, took.Round(time.Millisecond), res, res.servedBy, rf, full.Stats().Handed-rf.Handed, ro)
	if res.served != total || held.served != holds {
		t.Errorf("requests: %v, the first failures: %v %v; held connections: %v, %v", res, fdlErrs(res), head(res.dialErrs), held, fdlErrs(held))
	}
	for _, r := range []fdlReport{rf, ro} {
		if r.AcceptErr != "" {
			t.Errorf("Accept returned an error that is not temporary: %s", r.AcceptErr)
		}
		if r.Errors > 0 || r.Handed != r.Accepted {
			t.Errorf("a worker lost %d of %d connections handed to it; %d error events, the first: %s", r.Handed-r.Accepted, r.Handed, r.Errors, r.FirstError)
		}
	}
	if rf.Temporary == 0 {
		t.Errorf("the full worker's Accept never failed: it was not at its limit")
	}
	relStopAll(t)
	fdsAtMost(t, fds, "after the workers left")
}

// fdlLost makes the case that the reserves cannot rule out, and says what
// its SchedRR Accept did. It has a handoff socket of its own with one
// connection queued, its reserves above the descriptors it then fills
// (with its limit lowered to those), so that the slot a reserve frees is
// unusable, as if another thread had taken it. It sends an fdlReport.
func fdlLost() {
	self := Self()
	var events atomic.Int64
	errs := make(chan string, 8)
	self.OnError(func(err error) {
		events.Add(1)
		errs <- err.Error()
	})
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "fdl-lost:", err)
		os.Exit(1)
	}
	var low []int
	for range 64 {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fail(err)
		}
		low = append(low, fd)
	}
	out, peer, err := newHandoff()
	if err != nil {
		fail(err)
	}
	hc, err := handoffConn(peer) // the reserves land above low
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		fail(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		fail(err)
	}
	h, err := dupHandle(server)
	if err != nil {
		fail(err)
	}
	server.Close()
	if sent, err := sendConns(out, []sysHandle{h}, []byte{recordConn}); sent != 1 {
		fail(fmt.Errorf("sending the connection: %v", err))
	}

	lim := low[len(low)-1] + 1
	closeHandles(low)
	if err := fdlSetLimit(lim); err != nil {
		fail(err)
	}
	for {
		if _, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			break // EMFILE: every slot under the limit is taken
		}
	}

	l := &rrListener{set: &listenerSet{}, w: self, addr: ln.Addr(), c: hc, demanding: true}
	_, err = l.Accept()
	var r fdlReport
	var ne net.Error
	if errors.As(err, &ne) && ne.Temporary() && errors.Is(err, syscall.EMFILE) {
		r.Temporary = 1
	} else {
		r.AcceptErr = fmt.Sprint(err)
	}
	select {
	case r.FirstError = <-errs:
	case <-time.After(testTimeout):
	}
	// The client's end sees the connection closed.
	client.SetReadDeadline(time.Now().Add(testTimeout))
	_, err = client.Read(make([]byte, 1))
	r.ClientOpen = err == nil || errors.Is(err, os.ErrDeadlineExceeded)
	st := self.Stats()
	r.Errors, r.Handed, r.Accepted = events.Load(), st.Handed, st.Accepted
	self.Send(r)
	select {}
}

// TestRRFDLimitLost: when the slot freed for a connection is gone by the
// time recvmsg runs (child_rr_unix.go: another thread of the worker took
// it), the kernel drops the descriptor and the connection is lost; the
// worker says so in an error event and in its Stats, and its Accept then
// returns EMFILE without reading rather than losing more.
func TestRRFDLimitLost(t *testing.T) {
	require(t, "rr")
	if runtime.GOOS != "linux" {
		t.Skip("a descriptor dropped with MSG_CTRUNC when none is free: Linux's behaviour")
	}
	w := fork(t, "fdl-lost")
	in := messages(w)
	var r fdlReport
	if err := recv(t, in, "the worker's report").Decode(&r); err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if r.Errors != 1 || !strings.Contains(r.FirstError, "MSG_CTRUNC") || r.Handed != 1 || r.Accepted != 0 || r.ClientOpen {
		t.Errorf("the worker reported %d errors (the first: %q), handed %d, accepted %d, the client's end open: %v; want one error for MSG_CTRUNC, 1 handed, 0 accepted, the connection closed",
			r.Errors, r.FirstError, r.Handed, r.Accepted, r.ClientOpen)
	}
	if r.Temporary != 1 {
		t.Errorf("after the loss Accept returned %s, want EMFILE, temporary", r.AcceptErr)
	}
}

// BenchmarkRRAdopt is what a worker's Accept costs under SchedRR from the
// record to the *net.TCPConn: a read from a handoff socket and
// connFromHandle, "plain" as before the reserves (ReadMsgUnix, then
// net.FileConn), "reserve" as now (recvConn). Each record carries a
// connection of its own, blocking as the primary's accept4 leaves it; the
// connections are made and sent outside the timer, and closed inside it.
// cpu-ns/op is the process's CPU time in the timed part, which the other
// processes of a busy machine disturb less than the time it took.
func BenchmarkRRAdopt(b *testing.B) {
	require(b, "rr")
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	plain := func(c *net.UnixConn) (net.Conn, error) {
		var rec [1]byte
		oob := make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := c.ReadMsgUnix(rec[:], oob)
		if err != nil {
			return nil, err
		}
		hs, _ := parseRights(oob[:oobn])
		f := os.NewFile(uintptr(hs[0]), "conn")
		defer f.Close()
		return net.FileConn(f)
	}
	reserve := func(c *net.UnixConn) (net.Conn, error) {
		h, _, err := recvConn(c)
		if err != nil {
			return nil, err
		}
		return connFromHandle(h)
	}
	for _, bc := range []struct {
		name string
		take func(*net.UnixConn) (net.Conn, error)
	}{{"plain", plain}, {"reserve", reserve}} {
		b.Run(bc.name, func(b *testing.B) {
			out, peer, err := newHandoff()
			if err != nil {
				b.Fatal(err)
			}
			defer closeHandles([]sysHandle{out})
			hc, err := handoffConn(peer)
			if err != nil {
				b.Fatal(err)
			}
			defer hc.Close()
			const batch = 64
			records := bytes.Repeat([]byte{recordConn}, batch)
			hs := make([]sysHandle, batch)
			clients := make([]net.Conn, batch)
			var cpu time.Duration
			defer func() { b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op") }()
			for i := 0; i < b.N; i += batch {
				b.StopTimer()
				n := min(batch, b.N-i)
				for j := range n {
					if clients[j], err = net.Dial("tcp4", ln.Addr().String()); err != nil {
						b.Fatal(err)
					}
					c, err := ln.Accept()
					if err != nil {
						b.Fatal(err)
					}
					hs[j], err = dupHandle(c)
					c.Close()
					if err != nil {
						b.Fatal(err)
					}
					unix.SetNonblock(hs[j], false)
				}
				if sent, err := sendConns(out, hs[:n], records[:n]); err != nil || sent != n {
					b.Fatalf("sent %d of %d: %v", sent, n, err)
				}
				b.StartTimer()
				t0 := fdlCPU()
				for range n {
					c, err := bc.take(hc)
					if err != nil {
						b.Fatal(err)
					}
					c.Close()
				}
				cpu += fdlCPU() - t0
				b.StopTimer()
				for _, c := range clients[:n] {
					c.Close()
				}
				b.StartTimer()
			}
		})
	}
}

// fdlSetLimit sets this process's descriptor limit, soft and hard, to n.
func fdlSetLimit(n int) error {
	var rl unix.Rlimit
	fdlSet(&rl.Cur, n)
	fdlSet(&rl.Max, n)
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
}

// fdlSet sets *p to n: unix.Rlimit's fields are uint64 or int64 by system.
func fdlSet[T ~int64 | ~uint64](p *T, n int) { *p = T(n) }

// fdlCPU returns the CPU time this process has used.
func fdlCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// head returns the first few of s, for failure messages.
func head[T any](s []T) []T { return s[:min(len(s), 5)] }

// fdlErrs returns the first few of r's failures.
func fdlErrs(r *relResult) []string {
	var errs []string
	for _, f := range head(r.failures) {
		errs = append(errs, f.err)
	}
	return errs
}
