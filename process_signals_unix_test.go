//go:build unix

package clusternet

// Signals sent to the whole process group, as Ctrl-C in a terminal and
// systemd's KillMode=control-group send them: the workers get them too.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func init() {
	// sig-primary runs Run(ctx, 2) with workers serving SIG_ADDR, whose
	// handler says "in-flight" on standard output and answers after
	// SIG_HOLD; it reports every exit, and what Run returned.
	primaries["sig-primary"] = func() {
		OnExit(func(w *Worker, st ExitStatus) { fmt.Printf("exit %d %v\n", w.ID(), st) })
		OnListening(func(w *Worker, a Address) { fmt.Printf("listening %d %d\n", w.ID(), w.Process().Pid) })
		s := CurrentSettings()
		s.Env = []string{envHelper + "=sig-serve", "SIG_ADDR=" + os.Getenv("SIG_ADDR"), "SIG_HOLD=" + os.Getenv("SIG_HOLD")}
		s.DieOnSignal = os.Getenv("SIG_DIE") == "1"
		if err := SetupPrimary(s); err != nil {
			fmt.Println("setup:", err)
			return
		}
		fmt.Println("run returned:", Run(context.Background(), 2, WithShutdownTimeout(testTimeout)))
	}
	helpers["sig-serve"] = func() {
		hold, _ := time.ParseDuration(os.Getenv("SIG_HOLD"))
		ln, err := Listen("tcp4", os.Getenv("SIG_ADDR"))
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(2)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Println("in-flight")
			time.Sleep(hold)
			fmt.Fprint(w, "answered")
		})}
		ServeHTTP(srv, ln)
	}
}

// sigGroupStop starts sig-primary in a process group of its own, has n
// requests in flight, sends sig to the whole group, and returns how many
// requests were answered and the primary's exit lines.
func sigGroupStop(t *testing.T, sig syscall.Signal, n int, env ...string) (answered int, exits []string, ran string) {
	t.Helper()
	addr := freePort(t)
	cmd := primaryCommand(t, "sig-primary", append([]string{"SIG_ADDR=" + addr, "SIG_HOLD=1s"}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := runPrimary(t, cmd)
	pgid := cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) }) // whatever is left of the group
	p.waitLine(t, "listening")
	p.waitLine(t, "listening")

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testTimeout}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == "answered" {
				mu.Lock()
				answered++
				mu.Unlock()
			}
		}()
	}
	for range n {
		p.waitLine(t, "in-flight")
	}
	if err := syscall.Kill(-pgid, sig); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for {
		line := p.line(t)
		if strings.HasPrefix(line, "exit ") {
			exits = append(exits, line)
		}
		if strings.HasPrefix(line, "run returned") {
			ran = line
			break
		}
	}
	if err := p.wait(t); err != nil {
		t.Errorf("the primary exited with %v", err)
	}
	return answered, exits, ran
}

// By default the workers drain on SIGINT and SIGTERM: every request in
// flight is answered, the workers exit with code 0, and Run returns nil.
func TestSignalProcessGroup(t *testing.T) {
	require(t, "signals")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			const n = 40
			answered, exits, ran := sigGroupStop(t, sig, n)
			t.Logf("%d of %d requests answered; %v; %s", answered, n, exits, ran)
			if answered != n {
				t.Errorf("%d of %d requests in flight answered", answered, n)
			}
			for _, e := range exits {
				if !strings.HasSuffix(e, "exit code 0") {
					t.Errorf("a worker: %s; want exit code 0", e)
				}
			}
			if ran != "run returned: <nil>" {
				t.Errorf("%s; want nil", ran)
			}
		})
	}
}

// With Settings.DieOnSignal the workers take SIGTERM's default action.
func TestSignalProcessGroupDieOnSignal(t *testing.T) {
	require(t, "signals")
	answered, exits, ran := sigGroupStop(t, syscall.SIGTERM, 4, "SIG_DIE=1")
	t.Logf("%d of 4 requests answered; %v; %s", answered, exits, ran)
	if len(exits) < 2 {
		t.Fatalf("exits %v; want the two workers'", exits)
	}
	for _, e := range exits[:2] {
		if !strings.HasSuffix(e, "signal: terminated") {
			t.Errorf("a worker: %s; want killed by SIGTERM", e)
		}
	}
}

// A worker sent SIGTERM alone, by an operator, drains and exits with code 0;
// Run replaces it. (Kill from the primary still kills:
// TestProcessKillDefaultSignal.)
func TestSignalOneWorker(t *testing.T) {
	require(t, "signals")
	addr := freePort(t)
	p := startPrimary(t, "sig-primary", "SIG_ADDR="+addr, "SIG_HOLD=10ms")
	var id, pid int
	if _, err := fmt.Sscanf(p.waitLine(t, "listening"), "listening %d %d", &id, &pid); err != nil {
		t.Fatal(err)
	}
	p.waitLine(t, "listening")
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if line := p.waitLine(t, "exit "); line != fmt.Sprintf("exit %d exit code 0", id) {
		t.Errorf("worker %d sent SIGTERM: %q; want it to exit with code 0", id, line)
	}
	p.waitLine(t, "listening 3") // its replacement
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestScaleSignals: with WithScaleSignals, SIGTTIN adds a worker and
// SIGTTOU removes one.
func TestScaleSignals(t *testing.T) {
	addr := freePort(t)
	run := relRun(t, 2, addr, nil, WithScaleSignals(syscall.SIGTTIN, syscall.SIGTTOU))
	syscall.Kill(os.Getpid(), syscall.SIGTTIN)
	converge(t, 3)
	// One at a time: signals of one kind that arrive together are one.
	syscall.Kill(os.Getpid(), syscall.SIGTTOU)
	converge(t, 2)
	syscall.Kill(os.Getpid(), syscall.SIGTTOU)
	converge(t, 1)
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := Scale(2); err == nil {
		t.Fatal("Scale without Run succeeded")
	}
}
