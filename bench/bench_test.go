package bench

// go test -run '^$' -bench . ./bench
//
// BenchmarkHandoff and BenchmarkListen start a primary of their own for each
// policy (this test binary, re-executed; the policy is fixed in a process
// once it has forked); BenchmarkMessages runs with the test process as the
// primary, so that -cpuprofile covers the primary's side of the messages.

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/clusternet-go/clusternet/bench/internal/load"
	"github.com/clusternet-go/clusternet/bench/internal/server"
)

func TestMain(m *testing.M) {
	server.Main() // the roles this binary is re-executed as
	code := m.Run()
	stopTrees()
	os.Exit(code)
}

// trees are the servers the benchmarks started, kept across the calls of
// one benchmark with growing b.N and stopped once the tests are done.
var trees struct {
	sync.Mutex
	m map[string]*server.Tree
}

func tree(b *testing.B, spec server.Spec) *server.Tree {
	key := fmt.Sprintf("%+v", spec)
	trees.Lock()
	defer trees.Unlock()
	if t := trees.m[key]; t != nil {
		return t
	}
	t, err := server.Start(spec)
	if err != nil {
		b.Fatal(err)
	}
	if trees.m == nil {
		trees.m = map[string]*server.Tree{}
	}
	trees.m[key] = t
	return t
}

func stopTrees() {
	trees.Lock()
	defer trees.Unlock()
	for k, t := range trees.m {
		if err := t.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		delete(trees.m, k)
	}
}

var policies = []string{"rr", "none", "reuseport"}

// BenchmarkHandoff is new connections per second through 2 workers (one
// request each, "Connection: close", 16 at a time), for plain net.Listen and
// each policy; the servers answer without net/http ("raw"), so that the
// figure is the connection's path. primary-µs/conn is the primary's CPU
// time per connection, from /proc.
func BenchmarkHandoff(b *testing.B) {
	for _, mode := range append([]string{"plain"}, policies...) {
		b.Run(mode, func(b *testing.B) {
			spec := server.Spec{Kind: "cluster", Policy: mode, Workers: 2, Procs: 1, Handler: "raw", Stderr: os.Stderr}
			if mode == "plain" {
				spec = server.Spec{Kind: "plain", Procs: 2, Handler: "raw", Stderr: os.Stderr}
			}
			t := tree(b, spec)
			c0, err := t.CPU()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			r := load.NewConns(b.Context(), t.Ready.Addr, 16, load.Limits{Duration: time.Hour, Max: int64(b.N)})
			b.StopTimer()
			if r.Errors > 0 || r.Count != int64(b.N) {
				b.Fatalf("%d of %d connections failed", r.Errors, b.N)
			}
			c1, err := t.CPU()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
			if mode != "plain" {
				b.ReportMetric(float64(c1.Primary-c0.Primary)/1e3/float64(b.N), "primary-µs/conn")
			}
			b.ReportMetric(float64(c1.Workers-c0.Workers)/1e3/float64(b.N), "workers-µs/conn")
		})
	}
}

// BenchmarkKeepAlive is keep-alive HTTP requests per second (net/http, 32
// connections) for plain net.Listen and each policy.
func BenchmarkKeepAlive(b *testing.B) {
	for _, mode := range append([]string{"plain"}, policies...) {
		b.Run(mode, func(b *testing.B) {
			spec := server.Spec{Kind: "cluster", Policy: mode, Workers: 2, Procs: 1, Stderr: os.Stderr}
			if mode == "plain" {
				spec = server.Spec{Kind: "plain", Procs: 2, Stderr: os.Stderr}
			}
			t := tree(b, spec)
			b.ResetTimer()
			r := load.KeepAlive(b.Context(), t.Ready.Addr, 32, load.Limits{Duration: time.Hour, Max: int64(b.N)})
			b.StopTimer()
			if r.Errors > 0 {
				b.Fatalf("%d requests failed", r.Errors)
			}
			b.ReportMetric(float64(r.Count)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkMessages is Node's benchmark/cluster/echo.js with one worker:
// round trips ("rt": the primary sends, the worker echoes, the primary sends
// the next from its message handler) and one-way messages ("oneway": a
// window of 128, acknowledged every 16), JSON and Gob, with echo.js's small
// object payload and with 64 KiB of data added.
func BenchmarkMessages(b *testing.B) {
	for _, kind := range []string{"rt", "oneway"} {
		for _, ser := range []string{"json", "gob"} {
			for _, size := range []int{0, 64 << 10} {
				name := kind + "/" + ser + "/small"
				if size > 0 {
					name = kind + "/" + ser + "/" + strconv.Itoa(size>>10) + "KiB"
				}
				b.Run(name, func(b *testing.B) {
					cfg := server.MsgConfig{Serialization: ser, Duration: time.Hour, Max: int64(b.N)}
					r, err := server.RunMessages(cfg, server.MsgTest{Kind: kind, Size: size})
					if err != nil {
						b.Fatal(err)
					}
					// The time of the measured messages only, without the fork.
					b.ReportMetric(r.Seconds*1e9/float64(r.Count), "ns/op")
					b.ReportMetric(r.Rate, "msgs/s")
					if size > 0 {
						b.ReportMetric(r.MBps, "MB/s")
					}
				})
			}
		}
	}
}

// BenchmarkListen is the time from a worker's Listen to its first accepted
// connection, the primary binding the address afresh each time (the worker
// closed it last), for each policy; ns/op is that time, measured in the
// worker.
func BenchmarkListen(b *testing.B) {
	for _, p := range policies {
		b.Run(p, func(b *testing.B) {
			r, err := server.Runner{Stderr: os.Stderr}.Listen(p, server.ListenConfig{Iterations: b.N})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(r.Mean, "ns/op")
			b.ReportMetric(r.P99, "p99-ns")
			b.ReportMetric(r.Listen, "in-Listen-ns")
		})
	}
}
