// Package server holds the process trees that the benchmarks measure, and
// the client side that starts, queries and stops them.
//
// A benchmark program (bench/compare, or a test binary in bench/) calls Main
// first thing: when the process was started as one of the roles below, Main
// runs it and exits; otherwise it returns and the program carries on as the
// load generator. The roles are chosen by environment variables:
//
//   - CLUSTERNET_BENCH_ROLE=cluster: a clusternet primary forking Workers
//     workers that serve HTTP with clusternet.Listen (the policy comes from
//     CLUSTERNET_SCHED_POLICY, read by clusternet itself);
//   - CLUSTERNET_BENCH_ROLE=plain: the same server with net.Listen in one
//     process;
//   - CLUSTERNET_BENCH_ROLE=msg: a primary running the message benchmark;
//   - CLUSTERNET_BENCH_ROLE=listen: a primary measuring Listen latency.
//
// Forked workers are told their part by CLUSTERNET_BENCH_WORKER. The servers
// speak a line protocol on stdin/stdout (see Tree), which Node's server.js in
// bench/compare/node speaks too.
package server

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"

	"github.com/clusternet-go/clusternet"
)

const (
	envRole       = "CLUSTERNET_BENCH_ROLE"
	envWorkerRole = "CLUSTERNET_BENCH_WORKER"
	envConfig     = "CLUSTERNET_BENCH_CONFIG"
	// EnvProfile names a directory where every Go server process writes a
	// CPU profile, <role>-<pid>.pprof.
	EnvProfile = "CLUSTERNET_BENCH_CPUPROFILE"
)

// Config is a server's configuration, passed as JSON in CLUSTERNET_BENCH_CONFIG.
type Config struct {
	Workers int    `json:",omitempty"` // workers to fork
	Procs   int    `json:",omitempty"` // GOMAXPROCS of each worker; of the process for plain
	Handler string `json:",omitempty"` // "http" (default) or "raw"
	Addr    string `json:",omitempty"` // default 127.0.0.1:0

	// cluster: with NodeScript, the workers are Node programs (node's
	// path NodeExec), forked with Settings.NodeIPC and NodeWindow.
	NodeExec   string `json:",omitempty"`
	NodeScript string `json:",omitempty"`
	NodeWindow int    `json:",omitempty"`

	Msg    *MsgConfig    `json:",omitempty"`
	Listen *ListenConfig `json:",omitempty"`
}

func (c Config) addr() string {
	if c.Addr == "" {
		return "127.0.0.1:0"
	}
	return c.Addr
}

// Main runs the role this process was started for and exits, or returns
// at once if it has none.
func Main() {
	if clusternet.IsWorker() {
		role := os.Getenv(envWorkerRole)
		if role == "" {
			return // a worker of someone else's
		}
		cfg := readConfig()
		stop := startProfile("worker-" + role)
		clusternet.Self().OnDisconnect(stop)
		switch role {
		case "http":
			httpWorker(cfg)
		case "echo", "sink":
			msgWorker(role)
		case "listen":
			listenWorker(cfg)
		default:
			fatalf("unknown worker role %q", role)
		}
		stop()
		os.Exit(0)
	}
	role := os.Getenv(envRole)
	if role == "" {
		return
	}
	os.Unsetenv(envRole)
	cfg := readConfig()
	stop := startProfile(role)
	var err error
	switch role {
	case "cluster":
		err = clusterPrimary(cfg)
	case "plain":
		err = plainServer(cfg)
	case "msg":
		err = msgPrimary(cfg)
	case "listen":
		err = listenPrimary(cfg)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	stop()
	if err != nil {
		fatalf("%s: %v", role, err)
	}
	os.Exit(0)
}

func readConfig() Config {
	var cfg Config
	if s := os.Getenv(envConfig); s != "" {
		if err := json.Unmarshal([]byte(s), &cfg); err != nil {
			fatalf("%s: %v", envConfig, err)
		}
	}
	return cfg
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench server (pid %d): "+format+"\n", append([]any{os.Getpid()}, args...)...)
	os.Exit(2)
}

// startProfile starts a CPU profile if EnvProfile names a directory; the
// function it returns stops it (more than once is fine).
func startProfile(role string) func() {
	dir := os.Getenv(EnvProfile)
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, role+"-"+strconv.Itoa(os.Getpid())+".pprof"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench server: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			f.Close()
		})
	}
}

// workerSettings keeps the workers off the control protocol: they get no
// stdin and write to stderr only.
func workerSettings() (clusternet.Settings, error) {
	s := clusternet.CurrentSettings()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return s, err
	}
	s.Stdin = null
	s.Stdout = os.Stderr
	s.Stderr = os.Stderr
	return s, nil
}
