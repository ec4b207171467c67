package clusternet

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// The test binary is also the worker: a test forks it with
// CLUSTERNET_TEST_HELPER naming what the worker does.
const envHelper = "CLUSTERNET_TEST_HELPER"

var helpers = map[string]func(){}

// A test can also start the test binary as a primary of its own (to kill it,
// or to start it as systemd would): CLUSTERNET_TEST_PRIMARY names what it
// does, from primaries.
const envPrimary = "CLUSTERNET_TEST_PRIMARY"

var primaries = map[string]func(){}

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(envPrimary); ok && IsPrimary() {
		fn, ok := primaries[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "clusternet test primary: no role %q\n", name)
			os.Exit(3)
		}
		os.Unsetenv(envPrimary)
		fn()
		os.Exit(0)
	}
	if IsWorker() {
		name := os.Getenv(envHelper)
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "clusternet test worker: no helper %q\n", name)
			os.Exit(3)
		}
		fn()
		os.Exit(0)
	}
	// A race-enabled worker sleeps a second at exit unless told not to, and
	// the tests wait for many exits.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

// testTimeout bounds every wait in the tests.
const testTimeout = 20 * time.Second

// fork forks a worker running helper and makes sure it is gone when the test
// ends: disconnected, then killed if it lingers.
func fork(t testing.TB, helper string, env ...string) *Worker {
	t.Helper()
	w, err := Fork(append([]string{envHelper + "=" + helper}, env...)...)
	if err != nil {
		t.Fatalf("Fork: %v", err)
	}
	t.Cleanup(func() { reap(t, w) })
	return w
}

// reap ends w if it is still running and waits for its exit event.
func reap(t testing.TB, w *Worker) {
	select {
	case <-w.Done():
		return
	default:
	}
	w.Kill(os.Kill)
	select {
	case <-w.Done():
	case <-time.After(testTimeout):
		t.Errorf("worker %d (pid %d) did not exit", w.ID(), w.Process().Pid)
	}
}

// recv waits for a value on ch.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func waitDone(t testing.TB, w *Worker) {
	t.Helper()
	recv(t, w.Done(), "worker "+strconv.Itoa(w.ID())+" to exit")
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func init() {
	helpers["idle"] = func() { select {} }
	helpers["echo"] = func() {
		Self().OnMessage(func(m Message) {
			var v any
			if err := m.Decode(&v); err != nil {
				Self().Send("decode error: " + err.Error())
				return
			}
			Self().Send(v)
		})
		select {}
	}
}

// require skips t when this platform cannot do feature. The features are
// "unix" (Unix domain sockets), "udp", "signals" (signals other than kill),
// "rr" (round-robin handoff), "reuseport"; platform_*_test.go say which are
// missing where, and why.
func require(t testing.TB, feature string) {
	t.Helper()
	if why := platformLacks(feature); why != "" {
		t.Skip(why)
	}
}

// setPolicy sets the scheduling policy for one test. The policy is frozen
// after the first Fork in a real program; tests share one process, so they
// set it directly and put it back.
func setPolicy(t testing.TB, p Policy) {
	t.Helper()
	cluster.mu.Lock()
	old := cluster.policy
	cluster.policy = p
	cluster.mu.Unlock()
	t.Cleanup(func() {
		cluster.mu.Lock()
		cluster.policy = old
		cluster.mu.Unlock()
	})
}
