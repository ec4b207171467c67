package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/clusternet-go/clusternet"
)

// ListenConfig configures the listen role: a primary forks one worker, which
// Iterations times calls clusternet.Listen, dials the address, and accepts
// that connection, then closes both. Listen latency is the time from the
// call to Listen to the return of the first Accept; the primary binds the
// address afresh each time (the worker was the last to close it), as for a
// worker that is first to listen. The Listens cycle through a few ports
// (port 0 the first time): the primary takes a worker that reports
// listening on thousands of addresses for a hostile one.
type ListenConfig struct {
	Iterations int
	Warmup     int // iterations not measured; default 3
}

// ListenResult is what the listen role prints: nanoseconds.
type ListenResult struct {
	Policy string  `json:"policy"`
	N      int     `json:"n"`
	Listen float64 `json:"listen_ns"` // mean time in Listen
	Mean   float64 `json:"mean_ns"`   // mean time from Listen to the first accepted connection
	P50    float64 `json:"p50_ns"`
	P99    float64 `json:"p99_ns"`
	Max    float64 `json:"max_ns"`
	// Retries counts the Listens that failed with EADDRINUSE on a port
	// used before (see listenPorts), and were done again on a new one.
	Retries int    `json:"retries,omitempty"`
	Error   string `json:"error,omitempty"`
}

func listenPrimary(cfg Config) error {
	if cfg.Listen == nil {
		return errors.New("no listen configuration")
	}
	s, err := workerSettings()
	if err != nil {
		return err
	}
	if err := clusternet.SetupPrimary(s); err != nil {
		return err
	}
	res := make(chan ListenResult, 1)
	w, err := clusternet.Fork(envWorkerRole + "=listen")
	if err != nil {
		return err
	}
	defer stopWorkers([]*clusternet.Worker{w})
	w.OnMessage(func(m clusternet.Message) {
		var r ListenResult
		if err := m.Decode(&r); err != nil {
			r.Error = err.Error()
		}
		res <- r
	})
	w.OnExit(func(st clusternet.ExitStatus) {
		select {
		case res <- ListenResult{Error: "worker exited: " + st.String()}:
		default:
		}
	})
	w.OnError(func(err error) {
		select {
		case res <- ListenResult{Error: err.Error()}:
		default:
		}
	})
	var r ListenResult
	select {
	case r = <-res:
	case <-time.After(time.Duration(cfg.Listen.Iterations)*100*time.Millisecond + 60*time.Second):
		r.Error = "timed out"
	}
	r.Policy = clusternet.SchedulingPolicy().String()
	return json.NewEncoder(os.Stdout).Encode(r)
}

func listenWorker(cfg Config) {
	self := clusternet.Self()
	if cfg.Listen == nil {
		fatalf("no listen configuration")
	}
	r, err := measureListen(*cfg.Listen, cfg.addr())
	if err != nil {
		r.Error = err.Error()
	}
	self.Send(r)
	select {} // the primary disconnects this worker
}

// listenPorts is how many ports measureListen cycles through. A port is
// bound again only after the others: the primary closes its copy of a
// listening socket it sent to a worker once the frame is written, which on
// a loaded machine can come after the worker closed its own and asked again.
const listenPorts = 16

func measureListen(lc ListenConfig, addr string) (ListenResult, error) {
	warm := lc.Warmup
	if warm <= 0 {
		warm = 3
	}
	var r ListenResult
	var total, inListen []time.Duration
	ports := make([]string, listenPorts)
	for i := 0; i < warm+max(lc.Iterations, 1); i++ {
		slot := i % listenPorts
		a := ports[slot]
		if a == "" {
			a = addr
		}
		t0 := time.Now()
		ln, err := clusternet.Listen("tcp", a)
		if errors.Is(err, syscall.EADDRINUSE) && a != addr && r.Retries < 1000 {
			// Still held (see listenPorts): take a new port for the slot.
			r.Retries++
			ports[slot] = ""
			i--
			continue
		}
		if err != nil {
			return r, err
		}
		t1 := time.Now()
		dialed := make(chan net.Conn, 1)
		go func() {
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench worker: dial:", err)
				ln.Close()
			}
			dialed <- c
		}()
		c, err := ln.Accept()
		t2 := time.Now()
		if d := <-dialed; d != nil {
			d.Close()
		}
		if err != nil {
			return r, err
		}
		c.Close()
		ln.Close()
		ports[slot] = ln.Addr().String()
		if i >= warm {
			total = append(total, t2.Sub(t0))
			inListen = append(inListen, t1.Sub(t0))
		}
	}
	r.N = len(total)
	var sum, sumL time.Duration
	for i := range total {
		sum += total[i]
		sumL += inListen[i]
	}
	r.Mean = float64(sum) / float64(r.N)
	r.Listen = float64(sumL) / float64(r.N)
	slices.Sort(total)
	r.P50 = float64(total[(r.N-1)/2])
	r.P99 = float64(total[min(r.N-1, r.N*99/100)])
	r.Max = float64(total[r.N-1])
	return r, nil
}
