package clusternet

// WithMaxMemory: a worker whose memory keeps growing is replaced through
// the reload path, under load, without a failed request.

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

func init() {
	// mem-leak serves as rel-serve does; worker LEAK_ID also grows its
	// heap by 16 MiB every 50 ms, touching every page, until it is replaced.
	helpers["mem-leak"] = func() {
		if strconv.Itoa(Self().ID()) == os.Getenv("LEAK_ID") {
			go func() {
				var hoard [][]byte
				for {
					b := make([]byte, 16<<20)
					for i := range b {
						b[i] = 1
					}
					hoard = append(hoard, b)
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		relServe()
	}
}

// withMemoryEvery samples memory every d instead of every second.
func withMemoryEvery(d time.Duration) RunOption {
	return func(c *runConfig) { c.memoryEvery = d }
}

func TestRunMaxMemory(t *testing.T) {
	addr := freePort(t)
	leakID := forks() + 1 // the first worker of this Run
	withSettings(t, Settings{Env: []string{envHelper + "=mem-leak", "REL_ADDR=" + addr, "LEAK_ID=" + strconv.Itoa(leakID)}})
	const limit = 256 << 20
	run := startRun(t, 2, WithMaxMemory(limit), withMemoryEvery(50*time.Millisecond))
	ws := waitListening(t, 2)
	leaker := ws[0]
	if leaker.ID() != leakID {
		t.Fatalf("the first worker is %d", leaker.ID())
	}
	ctx, stopLoad := context.WithCancel(context.Background())
	load, loaded := relLoad(ctx, addr, 4, 0, testTimeout)
	recv(t, leaker.Done(), "the leaking worker to be replaced")
	if !leaker.ExitedAfterDisconnect() {
		t.Errorf("the leaking worker exited with %v, not after a disconnect", leaker.exitStatus())
	}
	converge(t, 2)
	stopLoad()
	<-loaded
	t.Logf("a worker over %d MiB replaced under load: %v", limit>>20, load)
	if load.failed != 0 || load.dialFailed != 0 || load.served == 0 {
		t.Fatalf("under load: %v; %v %v", load, load.failures, load.dialErrs)
	}
	for _, st := range Stats().PerWorker {
		if st.ResourcesErr != nil || st.RSS == 0 || st.RSS > limit || st.Uptime <= 0 {
			t.Errorf("worker %d: RSS %d, CPU %v, uptime %v, err %v", st.ID, st.RSS, st.CPU, st.Uptime, st.ResourcesErr)
		}
	}
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestProcessResources reads this process's own memory and CPU time.
func TestProcessResources(t *testing.T) {
	b := make([]byte, 64<<20)
	for i := range b {
		b[i] = 1
	}
	rss, cpu, err := processResources(os.Getpid())
	if err != nil || rss < 64<<20 || cpu <= 0 {
		t.Fatalf("RSS %d, CPU %v, err %v; want at least 64 MiB and some CPU", rss, cpu, err)
	}
	_ = b[len(b)-1]
	if _, _, err := processResources(1 << 30); err == nil {
		t.Fatal("the resources of a process that does not exist")
	}
}
