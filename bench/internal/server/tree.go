package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusternet-go/clusternet/bench/internal/proc"
)

// Spec says which server tree to start.
type Spec struct {
	Kind    string // "plain", "cluster" or "node"
	Policy  string // cluster: rr, none or reuseport; node: rr or none
	Workers int    // workers to fork (cluster, node)
	Procs   int    // GOMAXPROCS of each worker (cluster); of the process (plain)
	Handler string // "http" (default) or "raw" (cluster, plain)

	PrimaryProcs int      // GOMAXPROCS of a cluster's primary; default 1
	Exe          string   // the Go program to re-execute; default os.Executable()
	Node         string   // node's path (node; cluster with Node workers)
	NodeScript   string   // server.js (node; cluster: its workers are Node's, forked with Settings.NodeIPC)
	NodeWindow   int      // cluster with Node workers: Settings.NodeWindow
	Env          []string // added to the server's environment
	Stderr       io.Writer
}

// Tree is a running server: a primary and its workers (or one process for
// plain), with the control protocol on the primary's stdin and stdout.
type Tree struct {
	Spec  Spec
	Ready Ready

	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	started map[int]uint64 // pid -> start time, to kill only what is ours
	exited  chan struct{}
	once    sync.Once
}

// Start starts the tree and waits (at most 30s) until every worker listens.
func Start(s Spec) (*Tree, error) {
	var cmd *exec.Cmd
	env := cleanEnv()
	switch s.Kind {
	case "node":
		cmd = exec.Command(s.Node, s.NodeScript)
		env = append(env, "NODE_CLUSTER_SCHED_POLICY="+s.Policy, "BENCH_WORKERS="+strconv.Itoa(max(s.Workers, 1)))
	case "cluster", "plain":
		exe := s.Exe
		if exe == "" {
			var err error
			if exe, err = os.Executable(); err != nil {
				return nil, err
			}
		}
		cfg, _ := json.Marshal(Config{Workers: s.Workers, Procs: s.Procs, Handler: s.Handler, NodeExec: s.Node, NodeScript: s.NodeScript, NodeWindow: s.NodeWindow})
		cmd = exec.Command(exe)
		env = append(env, envRole+"="+s.Kind, envConfig+"="+string(cfg))
		if s.Kind == "plain" {
			env = append(env, "GOMAXPROCS="+strconv.Itoa(max(s.Procs, 1)))
		} else {
			env = append(env, "GOMAXPROCS="+strconv.Itoa(max(s.PrimaryProcs, 1)), "CLUSTERNET_SCHED_POLICY="+s.Policy)
		}
	default:
		return nil, fmt.Errorf("server: unknown kind %q", s.Kind)
	}
	cmd.Env = append(env, s.Env...)
	cmd.Stderr = s.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	setDeathSignal(cmd)
	t, err := startTree(cmd)
	if err != nil {
		return nil, err
	}
	t.Spec = s
	line, err := t.line(30 * time.Second)
	if err == nil {
		err = json.Unmarshal([]byte(line), &t.Ready)
		if err == nil && (t.Ready.Addr == "" || len(t.Ready.Workers) == 0) {
			err = fmt.Errorf("not ready: %s", line)
		}
	}
	if err != nil {
		t.Stop()
		return nil, fmt.Errorf("server %s %s: %w", s.Kind, s.Policy, err)
	}
	for _, w := range t.Ready.Workers {
		if st, err := proc.Read(w.Pid); err == nil {
			t.started[w.Pid] = st.StartTime
		}
	}
	if s.Kind == "node" || s.Kind == "cluster" {
		// Node reports "::ffff:127.0.0.1" or "127.0.0.1"; connect to IPv4 loopback.
		if i := strings.LastIndexByte(t.Ready.Addr, ':'); i >= 0 {
			t.Ready.Addr = "127.0.0.1" + t.Ready.Addr[i:]
		}
	}
	return t, nil
}

// startTree starts cmd with its stdin and stdout as the control channel.
func startTree(cmd *exec.Cmd) (*Tree, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// Not StdoutPipe: Wait, which runs concurrently, would close it under
	// the reader.
	stdout, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		stdout.Close()
		return nil, err
	}
	t := &Tree{cmd: cmd, stdin: stdin, lines: make(chan string, 16), started: map[int]uint64{}, exited: make(chan struct{})}
	if st, err := proc.Read(cmd.Process.Pid); err == nil {
		t.started[cmd.Process.Pid] = st.StartTime
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			t.lines <- sc.Text()
		}
		stdout.Close()
		close(t.lines)
	}()
	go func() {
		cmd.Wait()
		close(t.exited)
	}()
	return t, nil
}

// cleanEnv is this process's environment without the variables that would
// make the server something else.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "CLUSTERNET_") || strings.HasPrefix(k, "NODE_CLUSTER_") || k == "GOMAXPROCS" || k == "NODE_UNIQUE_ID" || strings.HasPrefix(k, "BENCH_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (t *Tree) line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-t.lines:
		if !ok {
			return "", errors.New("the server exited")
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("no answer within %v", timeout)
	}
}

// Stats asks every worker for its counters.
func (t *Tree) Stats() ([]Proc, error) {
	if _, err := io.WriteString(t.stdin, "stats\n"); err != nil {
		return nil, err
	}
	line, err := t.line(20 * time.Second)
	if err != nil {
		return nil, err
	}
	var r statsReply
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return nil, fmt.Errorf("stats: %v: %q", err, line)
	}
	if r.Error != "" {
		return r.Workers, errors.New(r.Error)
	}
	return r.Workers, nil
}

// CPU is the CPU time the tree's processes have used so far.
type CPU struct {
	Primary time.Duration // zero for plain, whose one process counts as its worker
	Workers time.Duration
}

// CPU reads the primary's and the workers' CPU time from /proc.
func (t *Tree) CPU() (CPU, error) {
	var c CPU
	for _, w := range t.Ready.Workers {
		d, err := proc.CPU(w.Pid)
		if err != nil {
			return c, err
		}
		c.Workers += d
	}
	if t.Spec.Kind != "plain" {
		d, err := proc.CPU(t.Ready.Pid)
		if err != nil {
			return c, err
		}
		c.Primary = d
	}
	return c, nil
}

// Stop asks the server to quit, kills it if it has not after 10s, and kills
// whichever of its workers outlive it (by pid, checking that each pid is
// still the process that was started).
func (t *Tree) Stop() error {
	var err error
	t.once.Do(func() {
		io.WriteString(t.stdin, "quit\n")
		t.stdin.Close()
		select {
		case <-t.exited:
		case <-time.After(10 * time.Second):
			err = fmt.Errorf("server pid %d did not quit: killed", t.cmd.Process.Pid)
			t.cmd.Process.Kill()
			<-t.exited
		}
		deadline := time.Now().Add(3 * time.Second)
		for pid, start := range t.started {
			for proc.Alive(pid, start) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if proc.Alive(pid, start) {
				if p, err := os.FindProcess(pid); err == nil {
					p.Kill()
				}
				if err == nil {
					err = fmt.Errorf("worker pid %d outlived its primary: killed", pid)
				}
			}
		}
	})
	return err
}

// Pids returns the tree's processes: the primary, then the workers.
func (t *Tree) Pids() []int {
	ps := []int{t.Ready.Pid}
	if t.Spec.Kind == "plain" {
		return ps
	}
	for _, w := range t.Ready.Workers {
		ps = append(ps, w.Pid)
	}
	return ps
}
