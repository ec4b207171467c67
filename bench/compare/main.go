// Command compare runs clusternet side by side with plain net.Listen and
// Node's cluster module, in one run, with the same HTTP handler and response
// bytes, and prints a table (and, with -json FILE, the same figures as JSON).
//
//	go run ./bench/compare                  # a few minutes
//	go run ./bench/compare -quick           # a smoke run of a few seconds
//	go run ./bench/compare -modes rr,none,node-rr -rounds 5 -json out.json
//
// Modes: plain (net.Listen in one process, GOMAXPROCS = workers × procs),
// rr, none, reuseport (clusternet's SchedRR, SchedNone, SchedReusePort, each
// worker with GOMAXPROCS = procs), node-rr and node-none (Node's cluster with
// NODE_CLUSTER_SCHED_POLICY=rr or none; skipped, with a note, when node is
// not on PATH), gonode-rr and gonode-rrw (a clusternet primary under SchedRR
// whose workers are Node's own, the worker half of the same server.js, forked
// with Settings.NodeIPC: gonode-rr with Node's flow control, one connection
// in flight per worker; gonode-rrw with -node-window of them; skipped
// likewise without node). Each mode runs as a process tree of its own (this program
// re-executed as the server, or node), all of them side by side; the load
// generator is this process. Every measurement is cut into slices (-slice)
// taken from every mode in turn, in an order that rotates, so that load from
// other processes on the machine falls on all modes alike; the medians over
// the rounds are reported, with the spread, and how much CPU other processes
// took meanwhile.
//
// Measurements, in this order:
//
//  1. throughput: keep-alive requests/s (closed loop, -conns connections) and
//     new connections/s (closed loop, -conc at a time, one request per
//     connection with "Connection: close"), with the CPU time per connection
//     of the primary and of the workers read from /proc/<pid>/stat;
//  2. latency at a fixed arrival rate (open loop, a new connection per
//     request, measured from each request's due time so that slow responses
//     are not hidden) at 50% and 80% of the slowest mode's new connections/s;
//  3. balance: connections per worker at light load (-light-rate
//     connections/s) with -balance-workers workers;
//  4. messages (-msg): round trips and one-way messages per second, JSON and
//     Gob against Node's json and advanced serialization, small and 64 KiB
//     payloads (Node's benchmark/cluster/echo.js);
//  5. Listen latency of the clusternet modes.
package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusternet-go/clusternet/bench/internal/server"
)

//go:embed node/server.js node/echo.js
var nodeFiles embed.FS

func main() {
	server.Main() // when re-executed as a server, this is where it runs
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command's flags.
type options struct {
	Duration        time.Duration `json:"duration"`
	Slice           time.Duration `json:"slice"`
	Warmup          time.Duration `json:"warmup"`
	Rounds          int           `json:"rounds"`
	Workers         int           `json:"workers"`
	Procs           int           `json:"procs"`
	PrimaryProcs    int           `json:"primary_procs"`
	LoadProcs       int           `json:"load_procs"`
	Modes           []string      `json:"modes"`
	Conns           int           `json:"conns"`
	Conc            int           `json:"conc"`
	Pool            int           `json:"pool"`
	BalanceWorkers  int           `json:"balance_workers"`
	Sweep           []int         `json:"sweep,omitempty"` // worker counts for the scaling sweep
	LightRate       float64       `json:"light_rate"`
	BalanceDuration time.Duration `json:"balance_duration"`
	Msg             bool          `json:"msg"`
	MsgDuration     time.Duration `json:"msg_duration"`
	MsgSizes        []int         `json:"msg_sizes"`
	ListenIters     int           `json:"listen_iterations"`
	Wrk             bool          `json:"wrk"`
	Quick           bool          `json:"quick"`

	jsonFile   string
	cpuprofile string
	NodeWindow int    `json:"node_window"`
	node       string // node's path; "" when skipped
	nodeDir    string // where server.js and echo.js were written
}

var allModes = []string{"plain", "rr", "none", "reuseport", "node-rr", "node-none", "gonode-rr", "gonode-rrw"}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	var modes, sweep string
	fs.DurationVar(&o.Duration, "duration", 2*time.Second, "length of each throughput and latency measurement")
	fs.DurationVar(&o.Slice, "slice", 250*time.Millisecond, "measurements are cut in slices of this length, taken from every mode in turn")
	fs.DurationVar(&o.Warmup, "warmup", 300*time.Millisecond, "keep-alive warm-up before each mode's measurements")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds; each runs every mode once, interleaved (medians are reported)")
	fs.IntVar(&o.Workers, "workers", runtime.NumCPU(), "workers per cluster")
	fs.IntVar(&o.Procs, "procs", 1, "GOMAXPROCS of each Go worker; plain gets workers × procs")
	fs.IntVar(&o.PrimaryProcs, "primary-procs", 1, "GOMAXPROCS of the clusternet primary")
	fs.IntVar(&o.LoadProcs, "load-procs", runtime.NumCPU(), "GOMAXPROCS of the load generator (this process)")
	fs.StringVar(&modes, "modes", strings.Join(allModes, ","), "modes to run: "+strings.Join(allModes, ","))
	fs.IntVar(&o.Conns, "conns", 64, "keep-alive connections")
	fs.IntVar(&o.Conc, "conc", 64, "new connections in flight (closed loop)")
	fs.IntVar(&o.NodeWindow, "node-window", 8, "gonode-rrw: connections in flight per Node worker (Settings.NodeWindow)")
	fs.IntVar(&o.Pool, "pool", 512, "open-loop goroutines (requests in flight at most)")
	fs.IntVar(&o.BalanceWorkers, "balance-workers", 4, "workers for the balance measurement")
	fs.StringVar(&sweep, "sweep", "", "worker counts, comma-separated (1,2,4,8): new connections/s and CPU per connection of every cluster mode at each count")
	fs.Float64Var(&o.LightRate, "light-rate", 250, "new connections/s for the balance measurement")
	fs.DurationVar(&o.BalanceDuration, "balance-duration", 2*time.Second, "length of the balance measurement")
	fs.BoolVar(&o.Msg, "msg", true, "run the message benchmark")
	fs.DurationVar(&o.MsgDuration, "msg-duration", time.Second, "length of each message measurement")
	fs.IntVar(&o.ListenIters, "listen", 200, "Listen latency iterations per clusternet mode (0: skip)")
	fs.BoolVar(&o.Wrk, "wrk", false, "measure keep-alive requests/s with wrk (must be on PATH) instead of the built-in generator")
	fs.BoolVar(&o.Quick, "quick", false, "a smoke run of a few seconds: short measurements, one round")
	fs.StringVar(&o.jsonFile, "json", "", "write the figures as JSON to this file")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "directory for CPU profiles of every Go server process")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.Quick {
		quick := map[string]func(){
			"duration":         func() { o.Duration = 150 * time.Millisecond },
			"warmup":           func() { o.Warmup = 50 * time.Millisecond },
			"rounds":           func() { o.Rounds = 1 },
			"balance-duration": func() { o.BalanceDuration = 200 * time.Millisecond },
			"msg-duration":     func() { o.MsgDuration = 100 * time.Millisecond },
			"listen":           func() { o.ListenIters = 10 },
		}
		for name, fn := range quick {
			if !set[name] {
				fn()
			}
		}
	}
	for m := range strings.SplitSeq(modes, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if !slices.Contains(allModes, m) {
			return nil, fmt.Errorf("unknown mode %q (want %s)", m, strings.Join(allModes, ","))
		}
		if !slices.Contains(o.Modes, m) {
			o.Modes = append(o.Modes, m)
		}
	}
	for f := range strings.SplitSeq(sweep, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-sweep: %q is not a worker count", f)
		}
		o.Sweep = append(o.Sweep, n)
	}
	o.MsgSizes = []int{0, 64 << 10}
	switch {
	case o.Rounds < 1, o.Workers < 1, o.Procs < 1, o.Conns < 1, o.Conc < 1, o.Pool < 1, o.BalanceWorkers < 1:
		return nil, errors.New("-rounds, -workers, -procs, -conns, -conc, -pool and -balance-workers must be at least 1")
	case o.Duration <= 0, o.Slice <= 0, o.BalanceDuration <= 0, o.MsgDuration <= 0, o.LightRate <= 0:
		return nil, errors.New("durations and -light-rate must be positive")
	}
	return o, nil
}

// syncWriter serializes writes: the servers' stderr and the log share it.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func run(args []string, stdout, stderr io.Writer) int {
	if _, ok := stderr.(*os.File); !ok {
		stderr = &syncWriter{w: stderr}
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "compare:", err)
		return 2
	}
	runtime.GOMAXPROCS(o.LoadProcs)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep := &Report{Options: *o, Machine: machine()}
	var notes []string
	if wantsNode(o) || o.Msg {
		if path, err := exec.LookPath("node"); err == nil {
			o.node = path
			dir, err := os.MkdirTemp("", "clusternet-compare-")
			if err != nil {
				fmt.Fprintln(stderr, "compare:", err)
				return 1
			}
			defer os.RemoveAll(dir)
			for _, name := range []string{"server.js", "echo.js"} {
				b, _ := nodeFiles.ReadFile("node/" + name)
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					fmt.Fprintln(stderr, "compare:", err)
					return 1
				}
			}
			o.nodeDir = dir
		} else {
			notes = append(notes, "node is not on PATH: skipped Node's cluster (node-rr, node-none, gonode-rr, gonode-rrw, and Node's side of the messages)")
		}
	}
	if o.Wrk {
		if _, err := exec.LookPath("wrk"); err != nil {
			fmt.Fprintln(stderr, "compare: -wrk: wrk is not on PATH")
			return 2
		}
	}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			fmt.Fprintln(stderr, "compare:", err)
			return 1
		}
	}
	rep.Notes = notes
	for _, n := range notes {
		fmt.Fprintln(stderr, "compare:", n)
	}
	m := &measurer{o: o, log: stderr, ctx: ctx}
	start := time.Now()
	m.all(rep)
	rep.Machine.LoadAfter = loadavg()
	rep.Seconds = time.Since(start).Seconds()
	rep.targets()

	printReport(stdout, rep)
	if o.jsonFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(o.jsonFile, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "compare: -json:", err)
			return 1
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "compare: interrupted")
		return 1
	}
	if rep.Failed {
		return 1
	}
	return 0
}

func wantsNode(o *options) bool {
	return slices.ContainsFunc(o.Modes, usesNode)
}

// Machine says where the figures come from.
type Machine struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model,omitempty"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	Node       string `json:"node,omitempty"`
	Date       string `json:"date"`
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339), LoadBefore: loadavg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("node", "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(out))
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}
