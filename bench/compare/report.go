package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/clusternet-go/clusternet/bench/internal/load"
	"github.com/clusternet-go/clusternet/bench/internal/server"
)

// Report is everything a run measured; -json writes it.
type Report struct {
	Machine         Machine         `json:"machine"`
	Options         options         `json:"options"`
	Seconds         float64         `json:"seconds"`
	Notes           []string        `json:"notes,omitempty"`
	Modes           []*ModeReport   `json:"modes"`
	LatencyBase     float64         `json:"latency_base_conn_per_s"` // the slowest mode's new connections/s
	LatencyBaseMode string          `json:"latency_base_mode"`
	Messages        []*MsgReport    `json:"messages,omitempty"`
	Listen          []*ListenReport `json:"listen,omitempty"`
	Targets         []Target        `json:"targets"`
	Sweep           []SweepRow      `json:"sweep,omitempty"`
	Failed          bool            `json:"failed"` // some measurement failed
}

// SweepRow is one mode's throughput with a number of workers (-sweep).
type SweepRow struct {
	Workers int `json:"workers"`
	*ModeReport
}

// num is a float64 that is null in JSON when it is not finite.
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, f, 'g', 6, 64), nil
}

// Stat is the median of a figure over the rounds, and its range.
type Stat struct {
	Median num `json:"median"`
	Min    num `json:"min"`
	Max    num `json:"max"`
	N      int `json:"n"`
}

func stat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{Median: num(math.NaN()), Min: num(math.NaN()), Max: num(math.NaN())}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: num(med), Min: num(s[0]), Max: num(s[len(s)-1]), N: len(s)}
}

// spread is the largest deviation of a round from the median, in percent.
func (s Stat) spread() float64 {
	m := float64(s.Median)
	if m == 0 || math.IsInf(m, 0) || math.IsNaN(m) {
		return 0
	}
	return 100 * max(m-float64(s.Min), float64(s.Max)-m) / m
}

func (s Stat) valid() bool {
	f := float64(s.Median)
	return s.N > 0 && !math.IsNaN(f)
}

// Throughput is one round of the throughput measurement of a mode.
type Throughput struct {
	Round       int      `json:"round"`
	KeepAlive   float64  `json:"keepalive_req_per_s"`
	KAErrors    int64    `json:"keepalive_errors"`
	NewConns    float64  `json:"new_conn_per_s"`
	NCErrors    int64    `json:"new_conn_errors"`
	PrimaryUs   float64  `json:"primary_cpu_us_per_conn"`
	WorkersUs   float64  `json:"workers_cpu_us_per_conn"`
	LoadUs      float64  `json:"loadgen_cpu_us_per_conn"`
	WorkersUsKA float64  `json:"workers_cpu_us_per_keepalive_req"`
	LoadUsKA    float64  `json:"loadgen_cpu_us_per_keepalive_req"`
	PerWorker   []uint64 `json:"new_conns_per_worker"`       // busiest first
	PerWorkerKA []uint64 `json:"keepalive_conns_per_worker"` // the keep-alive connections each worker got, busiest first
	RespBytes   [2]int   `json:"response_bytes"`             // keep-alive, Connection: close
	OtherCPU    float64  `json:"other_cpu_percent"`          // the machine's CPU that other processes used meanwhile
	Error       string   `json:"error,omitempty"`
}

// LatencyRound is one round of the open-loop measurement of a mode.
type LatencyRound struct {
	Round    int            `json:"round"`
	Levels   []load.Latency `json:"levels"` // durations in nanoseconds
	OtherCPU float64        `json:"other_cpu_percent"`
	Error    string         `json:"error,omitempty"`
}

// BalanceRound is one round of the balance measurement of a mode.
type BalanceRound struct {
	Round     int      `json:"round"`
	Counts    []uint64 `json:"counts"` // connections per worker, busiest first
	MaxMin    num      `json:"max_min"`
	Top2      float64  `json:"top2_share"`
	Errors    int64    `json:"errors"`
	P99       float64  `json:"p99_ms"`
	PrimaryUs float64  `json:"primary_cpu_us_per_conn"`
	Error     string   `json:"error,omitempty"`
}

// LatencySummary is a mode's latency at one load level, medians over rounds.
type LatencySummary struct {
	Level  float64 `json:"level"` // of the slowest mode's capacity
	Rate   float64 `json:"rate"`
	P50    Stat    `json:"p50_ms"`
	P99    Stat    `json:"p99_ms"`
	Max    Stat    `json:"max_ms"`
	Errors int64   `json:"errors"`
	Late   Stat    `json:"generator_late_p99_ms"`
}

// ModeReport is one mode's rounds and medians.
type ModeReport struct {
	Mode    string   `json:"mode"`
	Skipped string   `json:"skipped,omitempty"`
	Errors  []string `json:"errors,omitempty"` // a tree that did not start or stop

	KeepAlive   Stat             `json:"keepalive_req_per_s"`
	NewConns    Stat             `json:"new_conn_per_s"`
	PrimaryUs   Stat             `json:"primary_cpu_us_per_conn"`
	WorkersUs   Stat             `json:"workers_cpu_us_per_conn"`
	LoadUs      Stat             `json:"loadgen_cpu_us_per_conn"`
	WorkersUsKA Stat             `json:"workers_cpu_us_per_keepalive_req"`
	RespBytes   [2]int           `json:"response_bytes"`
	Latency     []LatencySummary `json:"latency,omitempty"`
	MaxMin      Stat             `json:"balance_max_min"`
	Top2        Stat             `json:"balance_top2_share"`
	LightCPU    Stat             `json:"light_load_primary_cpu_us_per_conn"`
	OtherCPU    Stat             `json:"other_cpu_percent"`     // during the throughput rounds
	OtherCPULat Stat             `json:"other_cpu_percent_lat"` // during the latency rounds

	Throughput  []Throughput   `json:"throughput_rounds"`
	LatencyRuns []LatencyRound `json:"latency_rounds,omitempty"`
	Balance     []BalanceRound `json:"balance_rounds,omitempty"`
}

func collect[T any](xs []T, ok func(T) bool, f func(T) float64) []float64 {
	var out []float64
	for _, x := range xs {
		if ok(x) {
			out = append(out, f(x))
		}
	}
	return out
}

func (mr *ModeReport) summarizeThroughput() {
	ok := func(t Throughput) bool { return t.Error == "" }
	mr.KeepAlive = stat(collect(mr.Throughput, ok, func(t Throughput) float64 { return t.KeepAlive }))
	mr.NewConns = stat(collect(mr.Throughput, ok, func(t Throughput) float64 { return t.NewConns }))
	mr.PrimaryUs = stat(collect(mr.Throughput, ok, func(t Throughput) float64 { return t.PrimaryUs }))
	mr.WorkersUs = stat(collect(mr.Throughput, ok, func(t Throughput) float64 { return t.WorkersUs }))
	mr.LoadUs = stat(collect(mr.Throughput, ok, func(t Throughput) float64 { return t.LoadUs }))
	mr.WorkersUsKA = stat(collect(mr.Throughput, ok, func(t Throughput) float64 { return t.WorkersUsKA }))
	mr.OtherCPU = stat(collect(mr.Throughput, func(t Throughput) bool { return ok(t) && !math.IsNaN(t.OtherCPU) }, func(t Throughput) float64 { return t.OtherCPU }))
	for _, t := range mr.Throughput {
		if ok(t) {
			mr.RespBytes = t.RespBytes
		}
	}
}

func (mr *ModeReport) summarizeLatency(levels []float64) {
	mr.Latency = nil
	for i, lv := range levels {
		s := LatencySummary{Level: lv}
		var p50, p99, mx, late []float64
		for _, r := range mr.LatencyRuns {
			if r.Error != "" || i >= len(r.Levels) {
				continue
			}
			l := r.Levels[i]
			s.Rate = l.Rate
			s.Errors += l.Errors
			p50 = append(p50, float64(l.P50)/1e6)
			p99 = append(p99, float64(l.P99)/1e6)
			mx = append(mx, float64(l.Max)/1e6)
			late = append(late, float64(l.Late)/1e6)
		}
		s.P50, s.P99, s.Max, s.Late = stat(p50), stat(p99), stat(mx), stat(late)
		mr.Latency = append(mr.Latency, s)
	}
	mr.OtherCPULat = stat(collect(mr.LatencyRuns, func(r LatencyRound) bool { return r.Error == "" && !math.IsNaN(r.OtherCPU) }, func(r LatencyRound) float64 { return r.OtherCPU }))
}

func (mr *ModeReport) summarizeBalance() {
	ok := func(b BalanceRound) bool { return b.Error == "" }
	mr.MaxMin = stat(collect(mr.Balance, ok, func(b BalanceRound) float64 { return float64(b.MaxMin) }))
	mr.Top2 = stat(collect(mr.Balance, ok, func(b BalanceRound) float64 { return b.Top2 }))
	if mr.Mode != "plain" {
		mr.LightCPU = stat(collect(mr.Balance, ok, func(b BalanceRound) float64 { return b.PrimaryUs }))
	}
}

// MsgReport is one message test of one implementation, over the rounds.
type MsgReport struct {
	Impl          string             `json:"impl"`
	Serialization string             `json:"serialization"`
	Kind          string             `json:"kind"`
	Size          int                `json:"size"`
	Rate          Stat               `json:"rate"`
	MBps          Stat               `json:"mbps"`
	Rounds        []server.MsgResult `json:"rounds"`
}

func (r *MsgReport) summarize() {
	ok := func(m server.MsgResult) bool { return m.Error == "" && m.Count > 0 }
	r.Rate = stat(collect(r.Rounds, ok, func(m server.MsgResult) float64 { return m.Rate }))
	r.MBps = stat(collect(r.Rounds, ok, func(m server.MsgResult) float64 { return m.MBps }))
}

func (r *MsgReport) sortKey() string {
	impl := "0"
	if r.Impl == "node" {
		impl = "1"
	}
	return fmt.Sprintf("%s-%s-%s-%09d", impl, r.Serialization, r.Kind, r.Size)
}

// ListenReport is the Listen latency of a clusternet mode.
type ListenReport struct {
	Mode   string                `json:"mode"`
	Mean   Stat                  `json:"mean_us"`
	P99    Stat                  `json:"p99_us"`
	Listen Stat                  `json:"in_listen_us"`
	Rounds []server.ListenResult `json:"rounds"`
}

func (r *ListenReport) summarize() {
	ok := func(l server.ListenResult) bool { return l.Error == "" }
	r.Mean = stat(collect(r.Rounds, ok, func(l server.ListenResult) float64 { return l.Mean / 1e3 }))
	r.P99 = stat(collect(r.Rounds, ok, func(l server.ListenResult) float64 { return l.P99 / 1e3 }))
	r.Listen = stat(collect(r.Rounds, ok, func(l server.ListenResult) float64 { return l.Listen / 1e3 }))
}

// Target is one of the targets and how this run did.
type Target struct {
	Name   string `json:"name"`
	Want   string `json:"want"`
	Value  num    `json:"value"`
	Detail string `json:"detail"`
	Met    *bool  `json:"met"` // null: not measured in this run
}

func (rep *Report) mode(name string) *ModeReport {
	for _, m := range rep.Modes {
		if m.Mode == name && m.Skipped == "" {
			return m
		}
	}
	return nil
}

func (rep *Report) msg(impl, ser, kind string, size int) *MsgReport {
	for _, m := range rep.Messages {
		if m.Impl == impl && m.Serialization == ser && m.Kind == kind && m.Size == size {
			return m
		}
	}
	return nil
}

// targets computes the targets from the medians.
func (rep *Report) targets() {
	add := func(name, want string, value float64, met bool, measured bool, detail string) {
		t := Target{Name: name, Want: want, Value: num(value), Detail: detail}
		if measured {
			t.Met = &met
		}
		rep.Targets = append(rep.Targets, t)
	}
	ratio := func(name string, a, b *ModeReport, get func(*ModeReport) Stat, want float64, unit string) {
		if a == nil || b == nil || !get(a).valid() || !get(b).valid() || get(b).Median == 0 {
			add(name, fmt.Sprintf("≥ %.2f", want), math.NaN(), false, false, "not measured")
			return
		}
		va, vb := float64(get(a).Median), float64(get(b).Median)
		r := va / vb
		add(name, fmt.Sprintf("≥ %.2f", want), r, r >= want, true, fmt.Sprintf("%.0f vs %.0f %s", va, vb, unit))
	}
	nc := func(m *ModeReport) Stat { return m.NewConns }
	ka := func(m *ModeReport) Stat { return m.KeepAlive }
	rr := rep.mode("rr")
	ratio("rr new conn/s ÷ none", rr, rep.mode("none"), nc, 0.9, "conn/s")
	ratio("rr new conn/s ÷ node-rr", rr, rep.mode("node-rr"), nc, 1.8, "conn/s")
	ratio("gonode-rr new conn/s ÷ node-rr", rep.mode("gonode-rr"), rep.mode("node-rr"), nc, 1.0, "conn/s")
	ratio(fmt.Sprintf("gonode-rrw (window %d) new conn/s ÷ node-rr", rep.Options.NodeWindow), rep.mode("gonode-rrw"), rep.mode("node-rr"), nc, 1.3, "conn/s")
	for _, name := range []string{"gonode-rr", "gonode-rrw"} {
		if g := rep.mode(name); g != nil && g.MaxMin.valid() {
			v := float64(g.MaxMin.Median)
			add(fmt.Sprintf("%s balance max/min (%d workers, light load)", name, rep.Options.BalanceWorkers), "≤ 1.10", v, v <= 1.1, true, fmt.Sprintf("top-2 share %.0f%%", 100*float64(g.Top2.Median)))
		} else {
			add(name+" balance max/min", "≤ 1.10", math.NaN(), false, false, "not measured")
		}
	}
	for _, m := range []string{"rr", "none", "reuseport"} {
		ratio(m+" keep-alive req/s ÷ plain", rep.mode(m), rep.mode("plain"), ka, 0.95, "req/s")
	}
	if rr != nil && rr.MaxMin.valid() {
		v := float64(rr.MaxMin.Median)
		add(fmt.Sprintf("rr balance max/min (%d workers, light load)", rep.Options.BalanceWorkers), "≤ 1.10", v, v <= 1.1, true, fmt.Sprintf("top-2 share %.0f%%", 100*float64(rr.Top2.Median)))
	} else {
		add("rr balance max/min", "≤ 1.10", math.NaN(), false, false, "not measured")
	}
	if rr != nil && rr.PrimaryUs.valid() {
		v := float64(rr.PrimaryUs.Median)
		add("rr primary CPU per connection (µs)", "≤ 10", v, v <= 10, true, fmt.Sprintf("at %.0f conn/s; %.1f µs at light load", float64(rr.NewConns.Median), float64(rr.LightCPU.Median)))
	} else {
		add("rr primary CPU per connection (µs)", "≤ 10", math.NaN(), false, false, "not measured")
	}
	for _, pair := range [][2]string{{"json", "json"}, {"gob", "advanced"}} {
		for _, size := range rep.Options.MsgSizes {
			name := fmt.Sprintf("round trips/s %s ÷ node %s, %s", pair[0], pair[1], sizeName(size))
			g, n := rep.msg("clusternet", pair[0], "rt", size), rep.msg("node", pair[1], "rt", size)
			if g == nil || n == nil || !g.Rate.valid() || !n.Rate.valid() || n.Rate.Median == 0 {
				add(name, "≥ 2.00", math.NaN(), false, false, "not measured")
				continue
			}
			r := float64(g.Rate.Median) / float64(n.Rate.Median)
			add(name, "≥ 2.00", r, r >= 2, true, fmt.Sprintf("%.0f vs %.0f round trips/s", float64(g.Rate.Median), float64(n.Rate.Median)))
		}
	}
}

func sizeName(size int) string {
	if size == 0 {
		return "small"
	}
	if size%1024 == 0 {
		return strconv.Itoa(size/1024) + " KiB"
	}
	return strconv.Itoa(size) + " B"
}

func fmtStat(s Stat, prec int) string {
	if !s.valid() {
		return "-"
	}
	m := float64(s.Median)
	if math.IsInf(m, 0) {
		return "∞"
	}
	v := strconv.FormatFloat(m, 'f', prec, 64)
	if s.N > 1 {
		v += fmt.Sprintf(" ±%.0f%%", s.spread())
	}
	return v
}

func fmtPlain(s Stat, prec int) string {
	if !s.valid() {
		return "-"
	}
	if math.IsInf(float64(s.Median), 0) {
		return "∞"
	}
	return strconv.FormatFloat(float64(s.Median), 'f', prec, 64)
}

func modeLabel(m string) string {
	switch m {
	case "plain":
		return "plain net.Listen"
	case "rr", "none", "reuseport":
		return "clusternet " + map[string]string{"rr": "SchedRR", "none": "SchedNone", "reuseport": "SchedReusePort"}[m]
	case "node-rr":
		return "node cluster rr"
	case "node-none":
		return "node cluster none"
	case "gonode-rr":
		return "clusternet SchedRR, Node workers"
	case "gonode-rrw":
		return "clusternet SchedRR, Node workers, window"
	}
	return m
}

// table is a Markdown table, its columns padded to line up.
type table struct{ rows [][]string }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) print(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c), 3)
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, w := range widths {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteString("| " + c + strings.Repeat(" ", w-utf8.RuneCountInString(c)) + " ")
		}
		fmt.Fprintln(w, b.String()+"|")
	}
	for i, r := range t.rows {
		line(r)
		if i == 0 {
			sep := make([]string, len(widths))
			for j, w := range widths {
				sep[j] = strings.Repeat("-", w)
			}
			line(sep)
		}
	}
}

// printReport prints the tables, in Markdown so that they paste into a README.
func printReport(w io.Writer, rep *Report) {
	o := rep.Options
	m := rep.Machine
	fmt.Fprintf(w, "clusternet compare, %s: %d CPUs (%s), kernel %s, %s, node %s; load average %s before, %s after; %d round(s) in %.0fs\n",
		m.Date, m.CPUs, m.CPUModel, m.Kernel, m.Go, orDash(m.Node), m.LoadBefore, m.LoadAfter, o.Rounds, rep.Seconds)
	fmt.Fprintf(w, "workers: %d × GOMAXPROCS %d (plain net.Listen: GOMAXPROCS %d; clusternet primary %d; load generator %d); %v per measurement; figures are medians over the rounds, ± the largest deviation of one round from the median\n",
		o.Workers, o.Procs, o.Workers*o.Procs, o.PrimaryProcs, o.LoadProcs, o.Duration)
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}

	fmt.Fprintf(w, "\n#### Throughput (keep-alive: %d connections; new connections: %d at a time, one request each)\n\n", o.Conns, o.Conc)
	var t table
	t.add("mode", "keep-alive req/s", "new conn/s", "primary µs/conn", "workers µs/conn", "load gen µs/conn", "workers µs/keep-alive req", "response bytes", "other load")
	for _, mr := range rep.Modes {
		if mr.Skipped != "" {
			t.add(modeLabel(mr.Mode), "skipped: "+mr.Skipped)
			continue
		}
		primary := fmtPlain(mr.PrimaryUs, 1)
		if mr.Mode == "plain" {
			primary = "-"
		}
		t.add(modeLabel(mr.Mode), fmtStat(mr.KeepAlive, 0), fmtStat(mr.NewConns, 0), primary, fmtPlain(mr.WorkersUs, 1),
			fmtPlain(mr.LoadUs, 1), fmtPlain(mr.WorkersUsKA, 1), fmt.Sprintf("%d / %d", mr.RespBytes[0], mr.RespBytes[1]), pct(mr.OtherCPU))
	}
	t.print(w)

	if len(rep.Sweep) > 0 {
		fmt.Fprintf(w, "\n#### Scaling with the number of workers (-sweep; new connections: %d at a time, one request each)\n\n", o.Conc)
		fmt.Fprintf(w, "On %d CPUs more workers than CPUs share them: the per-connection costs are the figures to read; a policy's ceiling is about 1 / (the primary's µs per connection) when the primary is on a CPU of its own.\n\n", m.CPUs)
		t = table{}
		t.add("workers", "mode", "new conn/s", "primary µs/conn", "workers µs/conn", "keep-alive req/s", "other load")
		for _, r := range rep.Sweep {
			if len(r.Errors) > 0 {
				t.add(fmt.Sprint(r.Workers), modeLabel(r.Mode), "failed: "+strings.Join(r.Errors, "; "))
				continue
			}
			t.add(fmt.Sprint(r.Workers), modeLabel(r.Mode), fmtStat(r.NewConns, 0), fmtPlain(r.PrimaryUs, 1), fmtPlain(r.WorkersUs, 1), fmtStat(r.KeepAlive, 0), pct(r.OtherCPU))
		}
		t.print(w)
	}

	if rep.LatencyBase > 0 {
		fmt.Fprintf(w, "\n#### Latency at a fixed arrival rate, ms (open loop, a new connection per request; a request the generator starts over 2ms late is timed from its due time)\n\n")
		fmt.Fprintf(w, "Rates: 50%% and 80%% of the slowest mode's new connections/s (%s, %.0f/s).\n\n", modeLabel(rep.LatencyBaseMode), rep.LatencyBase)
		t = table{}
		head := []string{"mode"}
		for _, lv := range []float64{0.5, 0.8} {
			head = append(head, fmt.Sprintf("%.0f/s p50", lv*rep.LatencyBase), "p99", "max")
		}
		t.add(append(head, "errors", "load gen late p99", "other load")...)
		for _, mr := range rep.Modes {
			if mr.Skipped != "" || len(mr.Latency) == 0 {
				continue
			}
			row := []string{modeLabel(mr.Mode)}
			var errs int64
			late := math.NaN()
			for _, l := range mr.Latency {
				row = append(row, fmtPlain(l.P50, 2), fmtPlain(l.P99, 2), fmtPlain(l.Max, 1))
				errs += l.Errors
				if l.Late.valid() && !(float64(l.Late.Median) <= late) {
					late = float64(l.Late.Median)
				}
			}
			t.add(append(row, strconv.FormatInt(errs, 10), fmtPlain(Stat{Median: num(late), N: 1}, 2), pct(mr.OtherCPULat))...)
		}
		t.print(w)
	}

	fmt.Fprintf(w, "\n#### Balance at light load (%.0f new connections/s for %v, %d workers)\n\n", o.LightRate, o.BalanceDuration, o.BalanceWorkers)
	t = table{}
	t.add("mode", "max/min", "busiest two's share", "connections per worker (last round)", "primary µs/conn")
	for _, mr := range rep.Modes {
		if mr.Skipped != "" || len(mr.Balance) == 0 {
			continue
		}
		last := mr.Balance[len(mr.Balance)-1]
		top := "-"
		if mr.Top2.valid() {
			top = fmt.Sprintf("%.0f%%", 100*float64(mr.Top2.Median))
		}
		t.add(modeLabel(mr.Mode), fmtPlain(mr.MaxMin, 2), top, strings.Trim(fmt.Sprint(last.Counts), "[]"), fmtPlain(mr.LightCPU, 1))
	}
	t.print(w)

	if len(rep.Messages) > 0 {
		fmt.Fprintf(w, "\n#### Messages (primary ↔ 1 worker; round trips/s as Node's benchmark/cluster/echo.js; one-way messages/s with a window of 128)\n\n")
		t = table{}
		head := []string{"implementation"}
		for _, kind := range []string{"rt", "oneway"} {
			for _, size := range o.MsgSizes {
				head = append(head, fmt.Sprintf("%s %s", map[string]string{"rt": "round trips/s", "oneway": "one-way msg/s"}[kind], sizeName(size)))
			}
		}
		t.add(append(head, "one-way MB/s 64 KiB")...)
		type key struct{ impl, ser string }
		var keys []key
		for _, r := range rep.Messages {
			if k := (key{r.Impl, r.Serialization}); !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			row := []string{k.impl + " " + k.ser}
			for _, kind := range []string{"rt", "oneway"} {
				for _, size := range o.MsgSizes {
					c := "-"
					if r := rep.msg(k.impl, k.ser, kind, size); r != nil {
						c = fmtStat(r.Rate, 0)
					}
					row = append(row, c)
				}
			}
			mb := "-"
			if r := rep.msg(k.impl, k.ser, "oneway", 64<<10); r != nil {
				mb = fmtPlain(r.MBps, 0)
			}
			t.add(append(row, mb)...)
		}
		t.print(w)
	}

	if len(rep.Listen) > 0 {
		fmt.Fprintf(w, "\n#### Listen latency, µs (a worker's Listen to its first accepted connection; the primary binds afresh each time)\n\n")
		t = table{}
		t.add("mode", "mean", "p99", "in Listen")
		for _, r := range rep.Listen {
			t.add(modeLabel(r.Mode), fmtPlain(r.Mean, 0), fmtPlain(r.P99, 0), fmtPlain(r.Listen, 0))
		}
		t.print(w)
	}

	fmt.Fprintf(w, "\n#### Targets\n\n")
	t = table{}
	t.add("target", "want", "measured", "", "from")
	for _, tg := range rep.Targets {
		met := "not measured"
		if tg.Met != nil {
			met = map[bool]string{true: "met", false: "MISSED"}[*tg.Met]
		}
		v := "-"
		if f := float64(tg.Value); !math.IsNaN(f) {
			v = strconv.FormatFloat(f, 'f', 2, 64)
		}
		t.add(tg.Name, tg.Want, v, met, tg.Detail)
	}
	t.print(w)
}

// pct prints a median share of the machine, in percent.
func pct(s Stat) string {
	if !s.valid() {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", float64(s.Median))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
