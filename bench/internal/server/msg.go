package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusternet-go/clusternet"
)

// The message benchmark is Node's benchmark/cluster/echo.js: the primary
// sends a payload to every worker and waits for all of them to echo it back
// before it sends the next ("rt", round trips); "oneway" streams payloads to
// the workers, which acknowledge every AckEvery of them, with at most Window
// unacknowledged per worker (neither Node's send nor clusternet's blocks, so
// an unbounded stream would only measure how fast memory fills up).
// bench/compare/node/echo.js is the same in Node.

// MsgConfig configures the msg role.
type MsgConfig struct {
	Serialization string        // json or gob
	Workers       int           // default 1, as echo.js
	Tests         []MsgTest     // run in order, each with workers of its own
	Duration      time.Duration // per test
	Max           int64         // most round trips, or messages, per test
	Window        int           // oneway: most unacknowledged messages per worker; default 128
	AckEvery      int           // oneway: default 16
	Warmup        int           // round trips (or acknowledgements) before timing; default 50
}

// MsgTest is one measurement: Kind "rt" or "oneway"; Size is the length of
// the payload's data string (0: the small payload alone).
type MsgTest struct {
	Kind string `json:"kind"`
	Size int    `json:"size"`
}

// MsgResult is one measurement's outcome, also printed by Node's echo.js.
type MsgResult struct {
	Impl          string  `json:"impl"`          // clusternet or node
	Serialization string  `json:"serialization"` // json, gob, advanced
	Kind          string  `json:"kind"`
	Size          int     `json:"size"`
	Workers       int     `json:"workers"`
	Count         int64   `json:"count"` // round trips (one per worker per broadcast) or messages
	Seconds       float64 `json:"seconds"`
	Rate          float64 `json:"rate"` // Count per second
	MBps          float64 `json:"mbps"` // payload megabytes (10^6) per second, one way
	Error         string  `json:"error,omitempty"`
}

// Payload is echo.js's object payload, with a data string for the large one.
type Payload struct {
	Action     string `json:"action"`
	PowerLevel int    `json:"powerLevel"`
	Data       string `json:"data,omitempty"`
}

// Ack acknowledges the first N messages of a oneway test.
type Ack struct {
	N int64 `json:"n"`
}

const envAck = "CLUSTERNET_BENCH_ACK"

// payloadLen is the length of p in JSON, the size the MB/s figures count
// (echo.js counts the same), whatever the serialization.
func payloadLen(p Payload) int {
	b, _ := json.Marshal(p)
	return len(b)
}

// NewPayload returns the payload of a test of the given size.
func NewPayload(size int) Payload {
	return Payload{Action: "pewpewpew", PowerLevel: 9001, Data: strings.Repeat("x", size)}
}

func (c *MsgConfig) defaults() {
	if c.Workers <= 0 {
		c.Workers = 1
	}
	if c.Window <= 0 {
		c.Window = 128
	}
	if c.AckEvery <= 0 {
		c.AckEvery = 16
	}
	if c.Warmup <= 0 {
		c.Warmup = 50
	}
	if c.Duration <= 0 {
		c.Duration = time.Second
	}
	if c.Max <= 0 {
		c.Max = 1 << 40
	}
}

func msgPrimary(cfg Config) error {
	if cfg.Msg == nil {
		return errors.New("no message configuration")
	}
	out := json.NewEncoder(os.Stdout)
	for _, t := range cfg.Msg.Tests {
		r, err := RunMessages(*cfg.Msg, t)
		if err != nil {
			r.Error = err.Error()
		}
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// RunMessages runs one message test with this process as the primary (the
// program must call Main first thing, so that its workers take their part).
func RunMessages(cfg MsgConfig, t MsgTest) (MsgResult, error) {
	cfg.defaults()
	ser := clusternet.JSON
	switch cfg.Serialization {
	case "", "json":
		cfg.Serialization = "json"
	case "gob":
		ser = clusternet.Gob
	default:
		return MsgResult{}, fmt.Errorf("unknown serialization %q", cfg.Serialization)
	}
	r := MsgResult{Impl: "clusternet", Serialization: cfg.Serialization, Kind: t.Kind, Size: t.Size, Workers: cfg.Workers}
	s, err := workerSettings()
	if err != nil {
		return r, err
	}
	s.Serialization = ser
	if err := clusternet.SetupPrimary(s); err != nil {
		return r, err
	}
	role := "echo"
	if t.Kind == "oneway" {
		role = "sink"
	} else if t.Kind != "rt" {
		return r, fmt.Errorf("unknown test kind %q", t.Kind)
	}
	var ws []*clusternet.Worker
	defer func() { stopWorkers(ws) }()
	for range cfg.Workers {
		w, err := clusternet.Fork(envWorkerRole+"="+role, envAck+"="+strconv.Itoa(cfg.AckEvery))
		if err != nil {
			return r, err
		}
		ws = append(ws, w)
	}
	p := NewPayload(t.Size)
	var count int64
	var elapsed time.Duration
	if t.Kind == "rt" {
		count, elapsed, err = roundTrips(ws, p, cfg)
	} else {
		count, elapsed, err = oneWay(ws, p, cfg)
	}
	r.Count, r.Seconds = count, elapsed.Seconds()
	if elapsed > 0 {
		r.Rate = float64(count) / elapsed.Seconds()
		r.MBps = r.Rate * float64(payloadLen(p)) / 1e6
	}
	return r, err
}

// stopWorkers disconnects the workers, killing those that take over 10s.
func stopWorkers(ws []*clusternet.Worker) {
	for _, w := range ws {
		w.Disconnect()
	}
	for _, w := range ws {
		select {
		case <-w.Done():
		case <-time.After(10 * time.Second):
			w.Kill(os.Kill)
			<-w.Done()
		}
	}
}

// roundTrips sends p to every worker, waits for every echo, and repeats, as
// echo.js does; the next broadcast goes out from the message handler.
func roundTrips(ws []*clusternet.Worker, p Payload, cfg MsgConfig) (int64, time.Duration, error) {
	var (
		mu       sync.Mutex
		got      int
		rounds   int64
		start    time.Time
		deadline time.Time
		elapsed  time.Duration
		stopped  bool
		failed   error
		done     = make(chan struct{})
		warm     = int64(cfg.Warmup)
	)
	broadcast := func() error {
		for _, w := range ws {
			if err := w.Send(p); err != nil {
				return err
			}
		}
		return nil
	}
	finish := func(err error) {
		if !stopped {
			stopped = true
			failed = err
			close(done)
		}
	}
	for _, w := range ws {
		w.OnMessage(func(m clusternet.Message) {
			var q Payload
			err := m.Decode(&q)
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				return
			}
			if err == nil && len(q.Data) != len(p.Data) {
				err = fmt.Errorf("echo of %d bytes, want %d", len(q.Data), len(p.Data))
			}
			if err != nil {
				finish(err)
				return
			}
			if got++; got < len(ws) {
				return
			}
			got = 0
			rounds++
			now := time.Now()
			switch {
			case rounds == warm:
				start, deadline = now, now.Add(cfg.Duration)
			case rounds > warm && (rounds-warm >= cfg.Max || !now.Before(deadline)):
				elapsed = now.Sub(start)
				finish(nil)
				return
			}
			if err := broadcast(); err != nil {
				finish(err)
			}
		})
		w.OnExit(func(st clusternet.ExitStatus) {
			mu.Lock()
			defer mu.Unlock()
			finish(fmt.Errorf("worker exited: %v", st))
		})
		w.OnError(func(err error) {
			mu.Lock()
			defer mu.Unlock()
			finish(err)
		})
	}
	mu.Lock()
	if err := broadcast(); err != nil {
		finish(err)
	}
	mu.Unlock()
	if err := wait(done, &mu, func() int64 { return rounds*int64(len(ws)) + int64(got) }); err != nil {
		err = fmt.Errorf("%v after %d round trips, waiting for %d echo(es)", err, rounds, len(ws)-got)
		finish(err)
		mu.Unlock()
		return 0, 0, err
	}
	mu.Lock()
	defer mu.Unlock()
	return (rounds - warm) * int64(len(ws)), elapsed, failed
}

// stallTimeout is how long a message test may go without progress.
const stallTimeout = 10 * time.Second

// wait waits for done, or fails once progress (read under mu) has not moved
// for stallTimeout; it returns with mu held on failure.
func wait(done <-chan struct{}, mu *sync.Mutex, progress func() int64) error {
	tick := time.NewTicker(stallTimeout)
	defer tick.Stop()
	last := int64(-1)
	for {
		select {
		case <-done:
			return nil
		case <-tick.C:
			mu.Lock()
			p := progress()
			if p == last {
				return fmt.Errorf("stalled for %v", stallTimeout)
			}
			last = p
			mu.Unlock()
		}
	}
}

// oneWay streams p to every worker with a window of unacknowledged messages.
func oneWay(ws []*clusternet.Worker, p Payload, cfg MsgConfig) (int64, time.Duration, error) {
	var (
		mu        sync.Mutex
		sent      = make([]int64, len(ws))
		acked     = make([]int64, len(ws))
		acks      int
		total     int64 // acknowledged, all workers
		base      int64 // acknowledged when the clock started
		start     time.Time
		deadline  time.Time
		elapsed   time.Duration
		stopped   bool
		failed    error
		done      = make(chan struct{})
		warmAcks  = cfg.Warmup
		maxWindow = int64(cfg.Window)
	)
	fill := func(i int) error {
		for !stopped && sent[i]-acked[i] < maxWindow {
			if err := ws[i].Send(p); err != nil {
				return err
			}
			sent[i]++
		}
		return nil
	}
	finish := func(err error) {
		if !stopped {
			stopped = true
			failed = err
			close(done)
		}
	}
	for i, w := range ws {
		w.OnMessage(func(m clusternet.Message) {
			var a Ack
			err := m.Decode(&a)
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				return
			}
			if err != nil {
				finish(err)
				return
			}
			total += a.N - acked[i]
			acked[i] = a.N
			acks++
			now := time.Now()
			switch {
			case acks == warmAcks:
				start, deadline, base = now, now.Add(cfg.Duration), total
			case acks > warmAcks && (total-base >= cfg.Max || !now.Before(deadline)):
				elapsed = now.Sub(start)
				finish(nil)
				return
			}
			if err := fill(i); err != nil {
				finish(err)
			}
		})
		w.OnExit(func(st clusternet.ExitStatus) {
			mu.Lock()
			defer mu.Unlock()
			finish(fmt.Errorf("worker exited: %v", st))
		})
		w.OnError(func(err error) {
			mu.Lock()
			defer mu.Unlock()
			finish(err)
		})
	}
	mu.Lock()
	for i := range ws {
		if err := fill(i); err != nil {
			finish(err)
			break
		}
	}
	mu.Unlock()
	if err := wait(done, &mu, func() int64 { return int64(acks) }); err != nil {
		err = fmt.Errorf("%v after %d acknowledgements (%v sent, %v acknowledged)", err, acks, sent, acked)
		finish(err)
		mu.Unlock()
		return 0, 0, err
	}
	mu.Lock()
	defer mu.Unlock()
	return total - base, elapsed, failed
}

// msgWorker echoes every payload back ("echo") or acknowledges every
// CLUSTERNET_BENCH_ACK of them ("sink").
func msgWorker(role string) {
	self := clusternet.Self()
	every, _ := strconv.ParseInt(os.Getenv(envAck), 10, 64)
	every = max(every, 1)
	var n int64
	self.OnError(func(err error) {
		fmt.Fprintln(os.Stderr, "bench worker:", err)
		os.Exit(2)
	})
	self.OnMessage(func(m clusternet.Message) {
		var p Payload
		if err := m.Decode(&p); err != nil {
			fmt.Fprintln(os.Stderr, "bench worker:", err)
			os.Exit(2)
		}
		if role == "echo" {
			self.Send(p)
			return
		}
		if n++; n%every == 0 {
			self.Send(Ack{N: n})
		}
	})
	select {} // the primary disconnects this worker, which ends it
}
