// Package load is the benchmarks' HTTP/1.1 load generator: closed-loop
// keep-alive requests, closed-loop new connections (one request per
// connection), and an open loop at a fixed arrival rate that measures latency
// from each request's scheduled time, so that a slow response delays nothing
// that would hide it.
//
// Every loop is bounded both in time and in count and stops by itself; every
// connection has a deadline.
package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var (
	reqKeepAlive = []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	reqClose     = []byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
)

// IOTimeout bounds every connection's life in the closed loops and every
// request in the open loop.
var IOTimeout = 5 * time.Second

// Result is what a closed loop did.
type Result struct {
	Count   int64         // requests (keep-alive) or connections (new connections) completed
	Errors  int64         // failed requests or connections
	Elapsed time.Duration // from the start to the last completion
	Bytes   int64         // response bytes read (headers and body)
}

// Rate returns completions per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Count) / r.Elapsed.Seconds()
}

// Limits bound a loop.
type Limits struct {
	Duration time.Duration
	Max      int64 // most completions; 0 means no bound other than Duration
}

func (l Limits) max() int64 {
	if l.Max <= 0 {
		return 1 << 62
	}
	return l.Max
}

// KeepAlive sends requests on conns keep-alive connections, one outstanding
// per connection, until lim is reached or ctx ends. The clock starts once
// every connection is established: the figure is requests, not handshakes.
func KeepAlive(ctx context.Context, addr string, conns int, lim Limits) Result {
	var budget, done, errs, nbytes atomic.Int64
	budget.Store(lim.max())
	var start, end time.Time
	began := make(chan struct{})
	var dialed sync.WaitGroup
	dialed.Add(conns)
	var last atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			d := net.Dialer{Timeout: IOTimeout}
			c, err := d.DialContext(ctx, "tcp", addr)
			dialed.Done()
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			<-began
			c.SetDeadline(end.Add(IOTimeout))
			br := bufio.NewReaderSize(c, 4096)
			for ctx.Err() == nil && budget.Add(-1) >= 0 {
				if _, err := c.Write(reqKeepAlive); err != nil {
					errs.Add(1)
					return
				}
				n, _, err := ReadResponse(br)
				if err != nil {
					errs.Add(1)
					return
				}
				nbytes.Add(int64(n))
				done.Add(1)
				now := time.Now()
				last.Store(int64(now.Sub(start)))
				if !now.Before(end) {
					return
				}
			}
		})
	}
	dialed.Wait()
	start = time.Now()
	end = start.Add(lim.Duration)
	close(began)
	wg.Wait()
	return Result{Count: done.Load(), Errors: errs.Load(), Elapsed: time.Duration(last.Load()), Bytes: nbytes.Load()}
}

// NewConns opens connections from conc goroutines, each sending one request
// with "Connection: close" and reading the response to the server's close,
// until lim is reached or ctx ends.
func NewConns(ctx context.Context, addr string, conc int, lim Limits) Result {
	var budget, done, errs, nbytes atomic.Int64
	budget.Store(lim.max())
	start := time.Now()
	end := start.Add(lim.Duration)
	var last atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			br := bufio.NewReaderSize(nil, 4096)
			for ctx.Err() == nil && budget.Add(-1) >= 0 {
				n, err := oneShot(ctx, addr, br, time.Now().Add(IOTimeout))
				if err != nil {
					errs.Add(1)
					if ctx.Err() != nil {
						return
					}
					// A refused or reset connection: do not spin on it.
					time.Sleep(time.Millisecond)
				} else {
					nbytes.Add(int64(n))
					done.Add(1)
				}
				now := time.Now()
				last.Store(int64(now.Sub(start)))
				if !now.Before(end) {
					return
				}
			}
		})
	}
	wg.Wait()
	return Result{Count: done.Load(), Errors: errs.Load(), Elapsed: time.Duration(last.Load()), Bytes: nbytes.Load()}
}

// oneShot makes one connection, sends one request with "Connection: close",
// reads the response and waits for the server to close, so that the
// TIME_WAIT state stays on the server's side.
func oneShot(ctx context.Context, addr string, br *bufio.Reader, deadline time.Time) (int, error) {
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write(reqClose); err != nil {
		return 0, err
	}
	br.Reset(c)
	n, keep, err := ReadResponse(br)
	if err != nil {
		return n, err
	}
	if keep {
		return n, errors.New("load: the server kept a \"Connection: close\" connection open")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			err = errors.New("load: bytes after the response")
		}
		return n, err
	}
	return n, nil
}

// timerSlack is how late a sleeping goroutine may wake up without there
// being a backlog: Go's netpoller, when idle, sleeps in whole milliseconds,
// so a sleep of 0.3ms can last 1ms, and one of 1.5ms, 2ms.
const timerSlack = 2 * time.Millisecond

// Latency is what an open loop measured.
type Latency struct {
	Rate     float64       // the arrival rate asked for, per second
	Sent     int64         // requests started
	Done     int64         // requests completed
	Errors   int64         // requests failed
	Achieved float64       // completions per second over the loop's duration
	P50      time.Duration // latency to the end of the response, from the due time if the request started late (see OpenLoop)
	P90      time.Duration
	P99      time.Duration
	Max      time.Duration
	Late     time.Duration // the 99th percentile of how late the generator itself started a request

	Samples []time.Duration `json:"-"` // every latency, sorted
	Lates   []time.Duration `json:"-"` // how late every request started, sorted
}

// Merge returns the latency of the open loops ls together, as one loop of
// their total duration d at ls[0]'s rate.
func Merge(ls []Latency, d time.Duration) Latency {
	var l Latency
	var all, lates [][]time.Duration
	for _, x := range ls {
		l.Rate = x.Rate
		l.Sent += x.Sent
		l.Errors += x.Errors
		all = append(all, x.Samples)
		lates = append(lates, x.Lates)
	}
	l.Samples, l.Lates = slices.Concat(all...), slices.Concat(lates...)
	slices.Sort(l.Samples)
	slices.Sort(l.Lates)
	l.summarize(d)
	return l
}

func (l *Latency) summarize(d time.Duration) {
	l.Done = int64(len(l.Samples))
	if n := len(l.Samples); n > 0 {
		l.P50, l.P90, l.P99 = quantile(l.Samples, 0.50), quantile(l.Samples, 0.90), quantile(l.Samples, 0.99)
		l.Max = l.Samples[n-1]
	}
	if len(l.Lates) > 0 {
		l.Late = quantile(l.Lates, 0.99)
	}
	if d > 0 {
		l.Achieved = float64(l.Done) / d.Seconds()
	}
}

// OpenLoop sends requests, each on a new connection ("Connection: close"),
// at a fixed arrival rate: request i is due at start + i/rate whatever
// happened to the ones before. pool goroutines carry the requests; when
// they are all waiting for slow responses, the next requests start late, and
// their latency is measured from their due time, so that they count their
// wait (no coordinated omission). A start later than its due time by less
// than timerSlack is the generator's own timer, not a backlog: such a
// request is timed from its start. Late says how late requests started.
//
// pool must exceed rate × the latency, or the generator is the bottleneck.
func OpenLoop(ctx context.Context, addr string, rate float64, pool int, lim Limits) Latency {
	if rate <= 0 || pool <= 0 {
		return Latency{Rate: rate}
	}
	interval := time.Duration(float64(time.Second) / rate)
	n := int64(lim.Duration / interval)
	if n > lim.max() {
		n = lim.max()
	}
	var next, sent, errs atomic.Int64
	samples := make([][]time.Duration, pool)
	lates := make([][]time.Duration, pool)
	start := time.Now().Add(10 * time.Millisecond)
	var wg sync.WaitGroup
	for g := range pool {
		wg.Go(func() {
			br := bufio.NewReaderSize(nil, 4096)
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				now := time.Now()
				late := now.Sub(due)
				lates[g] = append(lates[g], late)
				from := due
				if late < timerSlack {
					from = now
				}
				sent.Add(1)
				if _, err := oneShot(ctx, addr, br, now.Add(IOTimeout)); err != nil {
					errs.Add(1)
					continue
				}
				samples[g] = append(samples[g], time.Since(from))
			}
		})
	}
	wg.Wait()
	l := Latency{Rate: rate, Sent: sent.Load(), Errors: errs.Load(), Samples: slices.Concat(samples...), Lates: slices.Concat(lates...)}
	slices.Sort(l.Samples)
	slices.Sort(l.Lates)
	l.summarize(lim.Duration)
	return l
}

// quantile returns the q-quantile of sorted samples (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ReadResponse reads one HTTP/1.1 response with a Content-Length and
// returns its size in bytes and whether the connection stays open.
func ReadResponse(br *bufio.Reader) (n int, keepAlive bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	n += len(line)
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return n, false, fmt.Errorf("load: unexpected status line %q", line)
	}
	keepAlive = true
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return n, false, err
		}
		n += len(line)
		if len(line) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return n, false, fmt.Errorf("load: malformed header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return n, false, fmt.Errorf("load: bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			keepAlive = !bytes.EqualFold(value, []byte("close"))
		}
	}
	if length < 0 {
		return n, false, errors.New("load: response without Content-Length")
	}
	m, err := br.Discard(length)
	return n + m, keepAlive, err
}

// Sample returns one response to a request ("Connection: close" if close),
// as raw bytes, so that a comparison can check that every server sends the
// same number of bytes.
func Sample(addr string, close bool) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, IOTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(IOTimeout))
	req := reqKeepAlive
	if close {
		req = reqClose
	}
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &buf))
	n, _, err := ReadResponse(br)
	if err != nil {
		return nil, err
	}
	return buf.Bytes()[:n], nil
}
