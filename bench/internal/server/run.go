package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Runner starts the one-shot roles (msg, listen) as processes of their own.
type Runner struct {
	Exe        string // the Go program to re-execute; default os.Executable()
	Node       string // node's path, for Node's echo.js
	NodeScript string // echo.js
	Env        []string
	Stderr     io.Writer
}

// Messages runs the message tests in a process of their own: a clusternet
// primary when serialization is json or gob, Node's echo.js when node is
// true (serialization json or advanced).
func (r Runner) Messages(node bool, cfg MsgConfig) ([]MsgResult, error) {
	cfg.defaults()
	var cmd *exec.Cmd
	env := cleanEnv()
	if node {
		b, _ := json.Marshal(nodeMsgConfig{
			Serialization: cfg.Serialization, Workers: cfg.Workers, Tests: cfg.Tests,
			DurationMs: float64(cfg.Duration) / 1e6, Max: cfg.Max, Window: cfg.Window, AckEvery: cfg.AckEvery, Warmup: cfg.Warmup,
		})
		cmd = exec.Command(r.Node, r.NodeScript)
		env = append(env, "BENCH_MSG="+string(b))
	} else {
		exe, err := r.exe()
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(Config{Msg: &cfg})
		cmd = exec.Command(exe)
		env = append(env, envRole+"=msg", envConfig+"="+string(b), "GOMAXPROCS=1")
	}
	timeout := time.Duration(len(cfg.Tests))*(cfg.Duration+20*time.Second) + 30*time.Second
	lines, err := r.run(cmd, env, timeout)
	var rs []MsgResult
	for _, l := range lines {
		var m MsgResult
		if json.Unmarshal(l, &m) == nil && m.Kind != "" {
			rs = append(rs, m)
		}
	}
	if err == nil && len(rs) != len(cfg.Tests) {
		err = fmt.Errorf("%d results for %d tests", len(rs), len(cfg.Tests))
	}
	return rs, err
}

// nodeMsgConfig is MsgConfig as echo.js reads it.
type nodeMsgConfig struct {
	Serialization string    `json:"serialization"`
	Workers       int       `json:"workers"`
	Tests         []MsgTest `json:"tests"`
	DurationMs    float64   `json:"durationMs"`
	Max           int64     `json:"max"`
	Window        int       `json:"window"`
	AckEvery      int       `json:"ackEvery"`
	Warmup        int       `json:"warmup"`
}

// Listen measures Listen latency under policy (rr, none or reuseport) in a
// primary of its own.
func (r Runner) Listen(policy string, cfg ListenConfig) (ListenResult, error) {
	exe, err := r.exe()
	if err != nil {
		return ListenResult{}, err
	}
	b, _ := json.Marshal(Config{Listen: &cfg})
	cmd := exec.Command(exe)
	env := append(cleanEnv(), envRole+"=listen", envConfig+"="+string(b), "CLUSTERNET_SCHED_POLICY="+policy, "GOMAXPROCS=1")
	lines, err := r.run(cmd, env, time.Duration(cfg.Iterations)*100*time.Millisecond+90*time.Second)
	var res ListenResult
	if len(lines) > 0 {
		if jerr := json.Unmarshal(lines[len(lines)-1], &res); jerr != nil && err == nil {
			err = jerr
		}
	} else if err == nil {
		err = fmt.Errorf("no result")
	}
	if err == nil && res.Error != "" {
		err = fmt.Errorf("%s", res.Error)
	}
	return res, err
}

func (r Runner) exe() (string, error) {
	if r.Exe != "" {
		return r.Exe, nil
	}
	return os.Executable()
}

// run runs cmd to its end (killing it after timeout) and returns the lines
// of its standard output.
func (r Runner) run(cmd *exec.Cmd, env []string, timeout time.Duration) ([][]byte, error) {
	cmd.Env = append(env, r.Env...)
	cmd.Stderr = r.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.WaitDelay = 5 * time.Second // should a stray process hold stdout
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		err = fmt.Errorf("pid %d: no result within %v: killed", cmd.Process.Pid, timeout)
	}
	var lines [][]byte
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	if err != nil {
		err = fmt.Errorf("%s: %w", cmd.Path+" pid "+strconv.Itoa(cmd.Process.Pid), err)
	}
	return lines, err
}
