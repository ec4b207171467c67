//go:build unix

package clusternet

// Run and Reload with Node.js workers: a Node worker is listening when Node
// says so (its listening message), so Run is ready, and a reload moves on,
// exactly as with Go workers.

import (
	"context"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestNodeJSRunReload: Run keeps 2 Node workers; one killed is replaced;
// Reload twice under load refuses no request; the shutdown ends them all.
func TestNodeJSRunReload(t *testing.T) {
	for _, p := range []Policy{SchedRR, SchedNone} {
		t.Run(p.String(), func(t *testing.T) {
			setPolicy(t, p)
			addr := freePort(t)
			_, port, _ := net.SplitHostPort(addr)
			s := jsSettings(t, "whoami.js")
			s.Env = []string{"PORT=" + port, "HOST=127.0.0.1"}
			withSettings(t, s)
			run := startRun(t, 2, WithBackoff(time.Millisecond, 10*time.Millisecond))
			first := waitListening(t, 2)
			first[0].Kill(os.Kill)
			deadline := time.Now().Add(testTimeout)
			for {
				ws := waitListening(t, 2)
				if ws[1].ID() > first[1].ID() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the killed worker was not replaced")
				}
				time.Sleep(10 * time.Millisecond)
			}

			var ok, failed atomic.Int64
			loadCtx, endLoad := context.WithCancel(context.Background())
			loadDone := make(chan struct{})
			go func() {
				defer close(loadDone)
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
				for loadCtx.Err() == nil {
					if _, err := get(c, "http://"+addr+"/"); err != nil {
						failed.Add(1)
						t.Logf("request failed: %v", err)
					} else {
						ok.Add(1)
					}
				}
			}()
			for i := range 2 {
				start := time.Now()
				if err := Reload(testContext(t)); err != nil {
					t.Fatalf("Reload %d: %v", i, err)
				}
				t.Logf("reload %d took %v", i, time.Since(start))
			}
			endLoad()
			<-loadDone
			t.Logf("2 reloads: %d requests served, %d failed", ok.Load(), failed.Load())
			if failed.Load() != 0 || ok.Load() == 0 {
				t.Errorf("%d requests failed, %d served", failed.Load(), ok.Load())
			}
			if err := run.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if ws := aliveWorkers(); len(ws) != 0 {
				t.Fatalf("%d workers still alive after Run returned", len(ws))
			}
		})
	}
}
