package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/clusternet-go/clusternet/bench/internal/server"
)

func TestMain(m *testing.M) {
	server.Main() // this test binary is re-executed as the servers
	os.Exit(m.Run())
}

// TestQuick runs the whole comparison at smoke-test scale, so that it cannot
// rot: every mode must serve, every figure must be there, and the JSON must
// say the same as the table.
func TestQuick(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the comparison reads CPU time from /proc: Linux only")
	}
	if testing.Short() {
		t.Skip("the quick comparison takes some 15 seconds")
	}
	out := filepath.Join(t.TempDir(), "compare.json")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-quick", "-sweep", "1", "-json", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("compare -quick exited with %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	if strings.Contains(stderr.String(), "DATA RACE") {
		t.Errorf("a server process reported a data race:\n%s", &stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Modes []struct {
			Mode      string
			Skipped   string
			KeepAlive struct{ Median *float64 } `json:"keepalive_req_per_s"`
			NewConns  struct{ Median *float64 } `json:"new_conn_per_s"`
			RespBytes [2]int                    `json:"response_bytes"`
			Latency   []struct {
				P99 struct{ Median *float64 } `json:"p99_ms"`
			}
			BalanceMaxMin struct{ N int } `json:"balance_max_min"`
		}
		Messages []struct {
			Impl string
			Rate struct{ Median *float64 }
		}
		Listen  []struct{ Mode string }
		Targets []struct {
			Name string
			Met  *bool
		}
		Notes []string
		Sweep []struct {
			Workers  int
			Mode     string
			NewConns struct{ Median *float64 } `json:"new_conn_per_s"`
		}
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Modes) != len(allModes) {
		t.Fatalf("%d modes in the JSON, want %d", len(rep.Modes), len(allModes))
	}
	var bytes0 [2]int
	for _, m := range rep.Modes {
		if m.Skipped != "" {
			if !strings.HasPrefix(m.Mode, "node-") && !strings.HasPrefix(m.Mode, "gonode-") {
				t.Errorf("mode %s skipped: %s", m.Mode, m.Skipped)
			}
			continue
		}
		if m.KeepAlive.Median == nil || *m.KeepAlive.Median <= 0 || m.NewConns.Median == nil || *m.NewConns.Median <= 0 {
			t.Errorf("mode %s: no throughput figures", m.Mode)
		}
		if len(m.Latency) != 2 || m.Latency[0].P99.Median == nil {
			t.Errorf("mode %s: no latency figures", m.Mode)
		}
		if m.Mode != "plain" && m.BalanceMaxMin.N == 0 {
			t.Errorf("mode %s: no balance figure", m.Mode)
		}
		if bytes0 == [2]int{} {
			bytes0 = m.RespBytes
		} else if m.RespBytes != bytes0 {
			t.Errorf("mode %s sends %v response bytes, another mode %v", m.Mode, m.RespBytes, bytes0)
		}
	}
	impls := map[string]bool{}
	for _, m := range rep.Messages {
		if m.Rate.Median == nil || *m.Rate.Median <= 0 {
			t.Errorf("messages %s: no rate", m.Impl)
		}
		impls[m.Impl] = true
	}
	if !impls["clusternet"] {
		t.Error("no clusternet message figures")
	}
	if len(rep.Listen) != 3 {
		t.Errorf("Listen latency for %d modes, want 3", len(rep.Listen))
	}
	swept := map[string]bool{}
	for _, r := range rep.Sweep {
		if r.Workers != 1 || r.NewConns.Median == nil || *r.NewConns.Median <= 0 {
			t.Errorf("sweep row %+v: want 1 worker and a new conn/s figure", r)
		}
		swept[r.Mode] = true
	}
	for _, m := range []string{"rr", "none", "reuseport"} {
		if !swept[m] {
			t.Errorf("the sweep has no row for %s", m)
		}
	}
	if len(rep.Targets) < 7 {
		t.Errorf("%d targets, want at least 7", len(rep.Targets))
	}
	for _, section := range []string{"Throughput", "Scaling", "Latency", "Balance", "Messages", "Listen latency", "Targets"} {
		if !strings.Contains(stdout.String(), "#### "+section) {
			t.Errorf("the table has no %s section", section)
		}
	}
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	if _, err := parseFlags([]string{"-modes", "rr,bogus"}, &stderr); err == nil {
		t.Error("an unknown mode was accepted")
	}
	o, err := parseFlags([]string{"-quick", "-rounds", "2", "-modes", "rr, none"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.Rounds != 2 || o.Duration >= 1e9 || len(o.Modes) != 2 {
		t.Errorf("-quick -rounds 2 -modes rr,none gave %+v", o)
	}
	if _, err := parseFlags([]string{"-sweep", "1,x"}, &stderr); err == nil {
		t.Error("-sweep 1,x was accepted")
	}
	if o, err := parseFlags([]string{"-sweep", "1, 2,8"}, &stderr); err != nil || !slices.Equal(o.Sweep, []int{1, 2, 8}) {
		t.Errorf("-sweep 1,2,8 gave %v, %v", o.Sweep, err)
	}
}
