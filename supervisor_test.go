package clusternet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func init() {
	// sup-http serves "worker N" on ADDR; /crash exits with code 2.
	helpers["sup-http"] = func() {
		ln, err := Listen("tcp4", os.Getenv("ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/crash":
				os.Exit(2)
			case "/slow":
				Self().Send("slow") // this request is in progress
				time.Sleep(300 * time.Millisecond)
			}
			fmt.Fprintf(w, "worker %d", Self().ID())
		})}
		err = ServeHTTP(srv, ln)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helpers["sup-exit"] = func() { os.Exit(1) }
}

// runHandle is a Run in the background.
type runHandle struct {
	cancel context.CancelFunc
	done   chan error
	err    error
	ended  bool
}

// startRun runs Run in the background, without signal handling, and stops
// it when the test ends.
func startRun(t testing.TB, n int, opts ...RunOption) *runHandle {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runHandle{cancel: cancel, done: make(chan error, 1)}
	opts = append([]RunOption{WithShutdownSignals(), WithReloadSignals(), WithUpgradeSignals(), WithShutdownTimeout(5 * time.Second)}, opts...)
	go func() { r.done <- Run(ctx, n, opts...) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// wait waits for Run to return by itself.
func (r *runHandle) wait(t testing.TB) error {
	if !r.ended {
		r.ended = true
		r.err = recv(t, r.done, "Run to return")
	}
	return r.err
}

// stop ends Run's context and returns what Run returned.
func (r *runHandle) stop(t testing.TB) error {
	r.cancel()
	return r.wait(t)
}

// waitListening waits until n workers have reported listening.
func waitListening(t testing.TB, n int) []*Worker {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		var ls []*Worker
		for _, w := range Workers() {
			if len(w.listenedAddresses()) > 0 {
				ls = append(ls, w)
			}
		}
		if len(ls) == n {
			return ls
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %d listening workers (have %d)", n, len(Workers()))
	return nil
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestRunRespawnsAndStops(t *testing.T) {
	addr := freePort(t)
	withSettings(t, Settings{Env: []string{envHelper + "=sup-http", "ADDR=" + addr}})
	run := startRun(t, 2, WithBackoff(time.Millisecond, 10*time.Millisecond))
	first := waitListening(t, 2)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := get(c, "http://"+addr+"/crash"); err == nil {
		t.Fatal("the crash request got an answer")
	}
	// One of the first two died and was replaced by worker 3.
	deadline := time.Now().Add(testTimeout)
	for {
		ws := waitListening(t, 2)
		if ws[1].ID() > first[1].ID() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead worker was not replaced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ws := aliveWorkers(); len(ws) != 0 {
		t.Fatalf("%d workers still alive after Run returned", len(ws))
	}
}

func TestRunCrashLoop(t *testing.T) {
	withSettings(t, Settings{Env: []string{envHelper + "=sup-exit"}})
	run := startRun(t, 1, WithBackoff(time.Millisecond, time.Millisecond), WithCrashLoop(3, time.Minute))
	err := run.wait(t)
	if !errors.Is(err, ErrCrashLoop) {
		t.Fatalf("Run returned %v, want ErrCrashLoop", err)
	}
	t.Log(err)
}

func TestReloadUnderLoad(t *testing.T) {
	addr := freePort(t)
	withSettings(t, Settings{Env: []string{envHelper + "=sup-http", "ADDR=" + addr}})
	run := startRun(t, 2)
	waitListening(t, 2)

	var ok, failed atomic.Int64
	loadCtx, endLoad := context.WithCancel(context.Background())
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		for i := 0; i < 100000 && loadCtx.Err() == nil; i++ {
			if _, err := get(c, "http://"+addr+"/"); err != nil {
				failed.Add(1)
				t.Logf("request failed: %v at %d", err, time.Now().UnixMilli())
			} else {
				ok.Add(1)
			}
		}
	}()
	for i := 0; i < 3; i++ {
		start := time.Now()
		if err := Reload(testContext(t)); err != nil {
			t.Fatalf("Reload %d: %v", i, err)
		}
		t.Logf("reload %d took %v", i, time.Since(start))
	}
	endLoad()
	<-loadDone
	t.Logf("3 reloads: %d requests served, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d served", failed.Load(), ok.Load())
	}
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
}

// slowStarted hears the workers say that a /slow request is in progress.
var slowStarted = sync.OnceValue(func() chan struct{} {
	ch := make(chan struct{}, 1024)
	OnMessage(func(_ *Worker, m Message) {
		var s string
		if m.Decode(&s) == nil && s == "slow" {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	})
	return ch
})

// TestRunShutdownUnderLoad ends Run while requests are in progress in the
// workers: each must get its answer before the workers exit, under every
// policy.
func TestRunShutdownUnderLoad(t *testing.T) {
	policies := []Policy{SchedRR, SchedNone, SchedReusePort}
	if runtime.GOOS == "windows" {
		policies = policies[:2] // SO_REUSEPORT is Unix's; SchedRR is SchedNone there
	}
	for _, p := range policies {
		t.Run(p.String(), func(t *testing.T) {
			setPolicy(t, p)
			runShutdownUnderLoad(t)
		})
	}
}

func runShutdownUnderLoad(t *testing.T) {
	started := slowStarted()
	for len(started) > 0 {
		<-started
	}
	addr := freePort(t)
	withSettings(t, Settings{Env: []string{envHelper + "=sup-http", "ADDR=" + addr}})
	run := startRun(t, 2)
	waitListening(t, 2)
	const inFlight = 20
	results := make(chan error, inFlight)
	for range inFlight {
		go func() {
			c := &http.Client{Timeout: testTimeout}
			resp, err := c.Get("http://" + addr + "/slow")
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			results <- err
		}()
	}
	for range inFlight {
		recv(t, started, "a request to be in progress")
	}
	start := time.Now()
	if err := run.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	took := time.Since(start)
	failed := 0
	for range inFlight {
		if err := recv(t, results, "a response"); err != nil {
			failed++
			t.Logf("request failed: %v", err)
		}
	}
	t.Logf("graceful shutdown with %d requests in progress took %v; %d failed", inFlight, took.Round(time.Millisecond), failed)
	if failed != 0 {
		t.Fatalf("%d of %d requests in progress failed", failed, inFlight)
	}
	if ws := aliveWorkers(); len(ws) != 0 {
		t.Fatalf("%d workers alive after Run returned", len(ws))
	}
}
