//go:build unix

package clusternet

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func init() {
	primaries["rel-primary"] = relPrimary
}

// TestPrimarySIGKILL: the primary is killed with SIGKILL while serving
// under load; every worker is gone within 1 s, nothing started for the
// cluster is left running, and nothing listens on its address.
func TestPrimarySIGKILL(t *testing.T) {
	for _, policy := range []string{"rr", "none"} {
		t.Run(policy, func(t *testing.T) {
			addr := freePort(t)
			token := fmt.Sprintf("%d-%d", os.Getpid(), relSeq.Add(1))
			var pids []int
			// Registered before startPrimary's, so it runs after the
			// primary is stopped.
			t.Cleanup(func() {
				for _, pid := range append(pids, relTokenProcs(token)...) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			p := startPrimary(t, "rel-primary", "REL_POLICY="+policy, "REL_ADDR="+addr, "REL_TOKEN="+token)
			line := p.line(t)
			for _, f := range strings.Fields(line) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("the primary said %q", line)
				}
				pids = append(pids, pid)
			}
			if len(pids) != 4 {
				t.Fatalf("the primary said %q, want 4 worker pids", line)
			}

			ctx, stop := context.WithCancel(context.Background())
			res, loadDone := relLoad(ctx, addr, 4, 0, 2*time.Second)
			deadline := time.Now().Add(testTimeout)
			for res.done() < 50 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			killed := time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			var left []int
			for {
				left = slices.DeleteFunc(slices.Clone(pids), processGone)
				if len(left) == 0 || time.Since(killed) > time.Second {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			gone := time.Since(killed)
			stop()
			<-loadDone
			if len(left) > 0 {
				t.Fatalf("workers %v still running %v after the primary was killed", left, gone)
			}
			if rest := relTokenProcs(token); len(rest) > 0 {
				t.Errorf("processes of the cluster still running: %v", rest)
			}
			c, err := net.DialTimeout("tcp4", addr, time.Second)
			if err == nil {
				c.Close()
				t.Errorf("%s still accepts connections", addr)
			}
			t.Logf("%s: 4 workers gone %v after the primary's SIGKILL; the client had %v", policy, gone.Round(time.Millisecond), res)
		})
	}
}

// relPrimary is the primary that TestPrimarySIGKILL kills: 4 workers
// serving REL_ADDR; it prints their pids once they listen.
func relPrimary() {
	p := SchedRR
	if os.Getenv("REL_POLICY") == "none" {
		p = SchedNone
	}
	if err := SetSchedulingPolicy(p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listening := make(chan struct{}, 4)
	OnListening(func(*Worker, Address) { listening <- struct{}{} })
	var pids []string
	for range 4 {
		w, err := Fork(envHelper+"=rel-serve", "REL_ADDR="+os.Getenv("REL_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pids = append(pids, strconv.Itoa(w.Process().Pid))
	}
	for range 4 {
		select {
		case <-listening:
		case <-time.After(testTimeout):
			fmt.Fprintln(os.Stderr, "rel-primary: workers did not listen")
			os.Exit(1)
		}
	}
	fmt.Println(strings.Join(pids, " "))
	time.Sleep(2 * testTimeout) // killed before this ends
	Disconnect(context.Background())
	os.Exit(1)
}

// relTokenProcs returns the live processes whose environment has
// REL_TOKEN=token (Linux; elsewhere none are found).
func relTokenProcs(token string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), "REL_TOKEN="+token) {
			continue
		}
		if !processGone(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
