package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clusternet-go/clusternet/bench/internal/load"
	"github.com/clusternet-go/clusternet/bench/internal/proc"
	"github.com/clusternet-go/clusternet/bench/internal/server"
)

type measurer struct {
	o   *options
	log io.Writer
	ctx context.Context
}

func (m *measurer) logf(format string, args ...any) {
	fmt.Fprintf(m.log, "compare: "+format+"\n", args...)
}

func isNode(mode string) bool { return strings.HasPrefix(mode, "node-") }

// isGoNode says that mode is a clusternet primary with Node workers.
func isGoNode(mode string) bool { return strings.HasPrefix(mode, "gonode-") }

// usesNode says that mode runs node.
func usesNode(mode string) bool { return isNode(mode) || isGoNode(mode) }

// spec is the server tree of a mode.
func (m *measurer) spec(mode string, workers int) server.Spec {
	s := server.Spec{Workers: workers, Procs: m.o.Procs, PrimaryProcs: m.o.PrimaryProcs, Stderr: m.log}
	switch {
	case mode == "plain":
		s.Kind, s.Procs = "plain", workers*m.o.Procs
	case isNode(mode):
		s.Kind, s.Policy = "node", strings.TrimPrefix(mode, "node-")
		s.Node, s.NodeScript = m.o.node, filepath.Join(m.o.nodeDir, "server.js")
	case isGoNode(mode):
		s.Kind, s.Policy = "cluster", "rr"
		s.Node, s.NodeScript = m.o.node, filepath.Join(m.o.nodeDir, "server.js")
		if mode == "gonode-rrw" {
			s.NodeWindow = m.o.NodeWindow
		}
	default:
		s.Kind, s.Policy = "cluster", mode
	}
	if m.o.cpuprofile != "" {
		s.Env = append(s.Env, server.EnvProfile+"="+m.o.cpuprofile)
	}
	return s
}

// rotate returns xs starting at index r, so that no mode always goes first.
func rotate[T any](xs []T, r int) []T {
	if len(xs) == 0 {
		return nil
	}
	r %= len(xs)
	return append(slices.Clone(xs[r:]), xs[:r]...)
}

// live is a mode's running tree.
type live struct {
	mr *ModeReport
	t  *server.Tree
}

// startAll starts a tree for every mode; a mode whose tree does not start
// is reported and left out.
func (m *measurer) startAll(modes []*ModeReport, workers int, phase string) []*live {
	var ls []*live
	for _, mr := range modes {
		if m.ctx.Err() != nil {
			break
		}
		t, err := m.startTree(mr.Mode, workers)
		if err != nil {
			m.logf("%s %s: %v", phase, mr.Mode, err)
			mr.Errors = append(mr.Errors, phase+": "+err.Error())
			continue
		}
		ls = append(ls, &live{mr: mr, t: t})
	}
	return ls
}

func (m *measurer) stopAll(ls []*live) {
	for _, l := range ls {
		if err := l.t.Stop(); err != nil {
			m.logf("%s: %v", l.mr.Mode, err)
			l.mr.Errors = append(l.mr.Errors, err.Error())
		}
	}
}

// slices returns in how many slices a measurement of d is cut.
func (m *measurer) slices(d time.Duration) int {
	return max(1, int(d/m.o.Slice))
}

// The HTTP measurements keep every mode's tree running side by side and cut
// each measurement into slices of -slice, taken in turn from every mode (in
// an order that rotates from slice to slice): load from other processes on
// the machine, which comes and goes in bursts of seconds, then falls on all
// modes alike instead of on whichever ran at the time.
func (m *measurer) all(rep *Report) {
	var modes []*ModeReport
	for _, name := range m.o.Modes {
		mr := &ModeReport{Mode: name}
		if usesNode(name) && m.o.node == "" {
			mr.Skipped = "node is not on PATH"
		} else {
			modes = append(modes, mr)
		}
		rep.Modes = append(rep.Modes, mr)
	}
	defer func() {
		for _, mr := range rep.Modes {
			if len(mr.Errors) > 0 {
				rep.Failed = true
			}
		}
	}()

	ls := m.startAll(modes, m.o.Workers, "throughput")
	m.throughput(ls)
	for _, l := range ls {
		l.mr.summarizeThroughput()
	}
	// Latency at 50% and 80% of the slowest mode's new connections/s.
	for _, l := range ls {
		if c := float64(l.mr.NewConns.Median); c > 0 && (rep.LatencyBase == 0 || c < rep.LatencyBase) {
			rep.LatencyBase, rep.LatencyBaseMode = c, l.mr.Mode
		}
	}
	levels := []float64{0.5, 0.8}
	if rep.LatencyBase > 0 {
		m.latency(ls, rep.LatencyBase, levels)
		for _, l := range ls {
			l.mr.summarizeLatency(levels)
		}
	}
	m.stopAll(ls)

	// Balance at light load.
	var balanced []*ModeReport
	for _, mr := range modes {
		if mr.Mode != "plain" {
			balanced = append(balanced, mr)
		}
	}
	ls = m.startAll(balanced, m.o.BalanceWorkers, "balance")
	m.balance(ls)
	m.stopAll(ls)
	for _, mr := range balanced {
		mr.summarizeBalance()
	}

	if m.o.Msg && m.ctx.Err() == nil {
		m.messages(rep)
	}
	if m.o.ListenIters > 0 && m.ctx.Err() == nil {
		m.listen(rep, modes)
	}
	for _, n := range m.o.Sweep {
		if m.ctx.Err() != nil {
			break
		}
		m.sweep(rep, modes, n)
	}
}

// sweep measures the throughput of every cluster mode with n workers: how
// each policy scales, and what the primary spends per connection.
func (m *measurer) sweep(rep *Report, modes []*ModeReport, n int) {
	var rs []*ModeReport
	for _, mr := range modes {
		if mr.Mode != "plain" {
			rs = append(rs, &ModeReport{Mode: mr.Mode})
		}
	}
	ls := m.startAll(rs, n, fmt.Sprintf("sweep %d", n))
	m.throughput(ls)
	m.stopAll(ls)
	for _, mr := range rs {
		mr.summarizeThroughput()
		rep.Sweep = append(rep.Sweep, SweepRow{Workers: n, ModeReport: mr})
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

// startTree starts a mode's tree, retrying once: on a busy machine a start
// can time out.
func (m *measurer) startTree(mode string, workers int) (*server.Tree, error) {
	t, err := server.Start(m.spec(mode, workers))
	if err != nil {
		m.logf("%s: %v; retrying", mode, err)
		t, err = server.Start(m.spec(mode, workers))
	}
	return t, err
}

// sliceAcc adds up a mode's slices of one measurement.
type sliceAcc struct {
	res        load.Result
	cpu        server.CPU
	self       time.Duration
	other, all time.Duration // other processes' CPU time, and the machine's
	err        error
}

func (a *sliceAcc) add(r load.Result) {
	a.res.Count += r.Count
	a.res.Errors += r.Errors
	a.res.Elapsed += r.Elapsed
	a.res.Bytes += r.Bytes
}

func (a *sliceAcc) otherPercent() float64 {
	if a.all <= 0 {
		return math.NaN()
	}
	return max(0, 100*float64(a.other)/float64(a.all))
}

// measure runs f as one slice of l's measurement and adds it to a, with the
// CPU time that l's processes, this one and the others on the machine spent.
func (m *measurer) measure(l *live, a *sliceAcc, f func() load.Result) {
	busy0, total0, serr0 := proc.System()
	c0, err0 := l.t.CPU()
	u0 := proc.Self()
	r := f()
	u1 := proc.Self()
	c1, err1 := l.t.CPU()
	busy1, total1, serr1 := proc.System()
	a.add(r)
	if err := cmp.Or(err0, err1); err != nil {
		a.err = cmp.Or(a.err, err)
		return
	}
	a.cpu.Primary += c1.Primary - c0.Primary
	a.cpu.Workers += c1.Workers - c0.Workers
	a.self += u1 - u0
	if serr0 == nil && serr1 == nil {
		ours := (c1.Primary - c0.Primary) + (c1.Workers - c0.Workers) + (u1 - u0)
		a.other += max(0, busy1-busy0-ours)
		a.all += total1 - total0
	}
}

// throughput measures keep-alive requests/s, then new connections/s.
func (m *measurer) throughput(ls []*live) {
	for _, l := range ls {
		addr := l.t.Ready.Addr
		var tp Throughput
		if ka, err := load.Sample(addr, false); err == nil {
			tp.RespBytes[0] = len(ka)
		}
		if cl, err := load.Sample(addr, true); err == nil {
			tp.RespBytes[1] = len(cl)
		}
		l.mr.RespBytes = tp.RespBytes
		load.KeepAlive(m.ctx, addr, m.o.Conns, load.Limits{Duration: m.o.Warmup})
		load.NewConns(m.ctx, addr, m.o.Conc, load.Limits{Duration: m.o.Warmup})
	}
	n := m.slices(m.o.Duration)
	d := m.o.Duration / time.Duration(n)
	for r := range m.o.Rounds {
		ka := make(map[*live]*sliceAcc)
		nc := make(map[*live]*sliceAcc)
		start := map[*live][]server.Proc{}
		for _, l := range ls {
			ka[l], nc[l] = &sliceAcc{}, &sliceAcc{}
			ps, err := l.t.Stats()
			if err != nil {
				ka[l].err = err
			}
			start[l] = ps
		}
		for s := range n {
			for _, l := range rotate(ls, r*n+s) {
				if m.ctx.Err() != nil {
					return
				}
				m.measure(l, ka[l], func() load.Result {
					if m.o.Wrk {
						res, err := wrk(m.ctx, l.t.Ready.Addr, m.o.Conns, d)
						if err != nil {
							ka[l].err = err
						}
						return res
					}
					return load.KeepAlive(m.ctx, l.t.Ready.Addr, m.o.Conns, load.Limits{Duration: d})
				})
			}
		}
		before := map[*live][]server.Proc{}
		for _, l := range ls {
			ps, err := l.t.Stats()
			if err != nil {
				nc[l].err = err
			}
			before[l] = ps
		}
		for s := range n {
			for _, l := range rotate(ls, r*n+s) {
				if m.ctx.Err() != nil {
					return
				}
				m.measure(l, nc[l], func() load.Result {
					return load.NewConns(m.ctx, l.t.Ready.Addr, m.o.Conc, load.Limits{Duration: d})
				})
			}
		}
		for _, l := range ls {
			t := Throughput{Round: r + 1, RespBytes: l.mr.RespBytes}
			k, c := ka[l], nc[l]
			after, err := l.t.Stats()
			if err == nil {
				t.PerWorker = deltas(before[l], after)
			}
			if start[l] != nil && before[l] != nil {
				t.PerWorkerKA = deltas(start[l], before[l])
			}
			t.KeepAlive, t.KAErrors = k.res.Rate(), k.res.Errors
			t.NewConns, t.NCErrors = c.res.Rate(), c.res.Errors
			if k.res.Count > 0 {
				t.WorkersUsKA = us(k.cpu.Workers) / float64(k.res.Count)
				t.LoadUsKA = us(k.self) / float64(k.res.Count)
			}
			if c.res.Count > 0 {
				t.PrimaryUs = us(c.cpu.Primary) / float64(c.res.Count)
				t.WorkersUs = us(c.cpu.Workers) / float64(c.res.Count)
				t.LoadUs = us(c.self) / float64(c.res.Count)
			}
			t.OtherCPU = (&sliceAcc{other: k.other + c.other, all: k.all + c.all}).otherPercent()
			switch {
			case cmp.Or(k.err, c.err, err) != nil:
				t.Error = cmp.Or(k.err, c.err, err).Error()
			case k.res.Count == 0 || c.res.Count == 0:
				t.Error = fmt.Sprintf("no requests completed (keep-alive %d errors, new connections %d errors)", k.res.Errors, c.res.Errors)
			}
			if t.Error != "" {
				m.logf("round %d %s: %s", r+1, l.mr.Mode, t.Error)
			} else {
				m.logf("round %d %-9s keep-alive %8.0f req/s  new %7.0f conn/s  cpu/conn primary %5.1fµs workers %5.1fµs  other load %3.0f%%", r+1, l.mr.Mode, t.KeepAlive, t.NewConns, t.PrimaryUs, t.WorkersUs, t.OtherCPU)
			}
			l.mr.Throughput = append(l.mr.Throughput, t)
		}
	}
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// deltas returns the connections each worker accepted between two stats.
func deltas(before, after []server.Proc) []uint64 {
	prev := map[int]uint64{}
	for _, p := range before {
		prev[p.Pid] = p.Conns
	}
	var ds []uint64
	for _, p := range after {
		ds = append(ds, p.Conns-prev[p.Pid])
	}
	slices.Sort(ds)
	slices.Reverse(ds)
	return ds
}

// latency measures at each level of base connections/s, open loop.
func (m *measurer) latency(ls []*live, base float64, levels []float64) {
	n := m.slices(m.o.Duration)
	d := m.o.Duration / time.Duration(n)
	for r := range m.o.Rounds {
		rounds := map[*live]*LatencyRound{}
		for _, l := range ls {
			rounds[l] = &LatencyRound{Round: r + 1}
		}
		other := map[*live]*sliceAcc{}
		for _, lv := range levels {
			parts := map[*live][]load.Latency{}
			for s := range n {
				for _, l := range rotate(ls, r*n+s) {
					if m.ctx.Err() != nil {
						return
					}
					if other[l] == nil {
						other[l] = &sliceAcc{}
					}
					m.measure(l, other[l], func() load.Result {
						x := load.OpenLoop(m.ctx, l.t.Ready.Addr, lv*base, m.o.Pool, load.Limits{Duration: d})
						parts[l] = append(parts[l], x)
						return load.Result{}
					})
				}
			}
			for _, l := range ls {
				x := load.Merge(parts[l], d*time.Duration(n))
				rounds[l].Levels = append(rounds[l].Levels, x)
				m.logf("round %d %-9s %4.0f/s: p50 %v p99 %v max %v (errors %d, generator late p99 %v)", r+1, l.mr.Mode, x.Rate, ms(x.P50), ms(x.P99), ms(x.Max), x.Errors, ms(x.Late))
			}
		}
		for _, l := range ls {
			lr := rounds[l]
			lr.OtherCPU = other[l].otherPercent()
			if other[l].err != nil {
				lr.Error = other[l].err.Error()
			}
			l.mr.LatencyRuns = append(l.mr.LatencyRuns, *lr)
		}
	}
}

// balance counts the connections each worker gets at light load.
func (m *measurer) balance(ls []*live) {
	for _, l := range ls {
		// A few connections first, so that every worker is accepting.
		load.NewConns(m.ctx, l.t.Ready.Addr, 1, load.Limits{Duration: time.Second, Max: int64(2 * m.o.BalanceWorkers)})
	}
	n := m.slices(m.o.BalanceDuration)
	d := m.o.BalanceDuration / time.Duration(n)
	for r := range m.o.Rounds {
		before := map[*live][]server.Proc{}
		acc := map[*live]*sliceAcc{}
		for _, l := range ls {
			ps, err := l.t.Stats()
			acc[l] = &sliceAcc{err: err}
			before[l] = ps
		}
		for s := range n {
			for _, l := range rotate(ls, r*n+s) {
				if m.ctx.Err() != nil {
					return
				}
				m.measure(l, acc[l], func() load.Result {
					x := load.OpenLoop(m.ctx, l.t.Ready.Addr, m.o.LightRate, m.o.Pool, load.Limits{Duration: d})
					return load.Result{Count: x.Done, Errors: x.Errors}
				})
			}
		}
		for _, l := range ls {
			a := acc[l]
			b := BalanceRound{Round: r + 1, Errors: a.res.Errors}
			after, err := l.t.Stats()
			if err = cmp.Or(a.err, err); err == nil {
				b.Counts = deltas(before[l], after)
				if len(b.Counts) != m.o.BalanceWorkers {
					err = fmt.Errorf("%d workers reported, want %d", len(b.Counts), m.o.BalanceWorkers)
				}
			}
			if a.res.Count > 0 {
				b.PrimaryUs = us(a.cpu.Primary) / float64(a.res.Count)
			}
			if err != nil {
				b.Error = err.Error()
				m.logf("round %d %s balance: %v", r+1, l.mr.Mode, err)
			} else {
				var total uint64
				for _, c := range b.Counts {
					total += c
				}
				hi, lo := b.Counts[0], b.Counts[len(b.Counts)-1]
				b.MaxMin = num(float64(hi) / float64(lo)) // +Inf when a worker got nothing
				if total > 0 {
					top := b.Counts[0]
					if len(b.Counts) > 1 {
						top += b.Counts[1]
					}
					b.Top2 = float64(top) / float64(total)
				}
				m.logf("round %d %-9s balance %v max/min %.2f top-2 %.0f%%", r+1, l.mr.Mode, b.Counts, float64(b.MaxMin), 100*b.Top2)
			}
			l.mr.Balance = append(l.mr.Balance, b)
		}
	}
}

// messages runs the message tests, clusternet and Node interleaved.
func (m *measurer) messages(rep *Report) {
	type impl struct {
		node bool
		ser  string
	}
	impls := []impl{{false, "json"}, {false, "gob"}}
	if m.o.node != "" {
		impls = append(impls, impl{true, "json"}, impl{true, "advanced"})
	}
	var tests []server.MsgTest
	for _, kind := range []string{"rt", "oneway"} {
		for _, size := range m.o.MsgSizes {
			tests = append(tests, server.MsgTest{Kind: kind, Size: size})
		}
	}
	runner := server.Runner{Node: m.o.node, NodeScript: filepath.Join(m.o.nodeDir, "echo.js"), Stderr: m.log}
	if m.o.cpuprofile != "" {
		runner.Env = []string{server.EnvProfile + "=" + m.o.cpuprofile}
	}
	// Each round runs every implementation n times, in turn, for a slice of
	// -msg-duration: as for HTTP, so that load from other processes falls
	// on all of them alike. A slice is at least msgSlice: each run forks.
	const msgSlice = 500 * time.Millisecond
	n := max(1, int(m.o.MsgDuration/msgSlice))
	rows := map[string]*MsgReport{}
	for r := range m.o.Rounds {
		sums := map[string]*server.MsgResult{}
		var keys []string
		for s := range n {
			for _, im := range rotate(impls, r*n+s) {
				if m.ctx.Err() != nil {
					return
				}
				cfg := server.MsgConfig{Serialization: im.ser, Tests: tests, Duration: m.o.MsgDuration / time.Duration(n)}
				results, err := runner.Messages(im.node, cfg)
				if err != nil {
					m.logf("round %d messages %v %s: %v", r+1, map[bool]string{true: "node", false: "clusternet"}[im.node], im.ser, err)
					rep.Failed = true
				}
				for _, res := range results {
					key := fmt.Sprintf("%s/%s/%s/%d", res.Impl, res.Serialization, res.Kind, res.Size)
					sum := sums[key]
					if sum == nil {
						sum = &server.MsgResult{Impl: res.Impl, Serialization: res.Serialization, Kind: res.Kind, Size: res.Size, Workers: res.Workers}
						sums[key] = sum
						keys = append(keys, key)
					}
					if res.Error != "" {
						sum.Error = res.Error
						continue
					}
					if res.Rate > 0 {
						sum.MBps = res.MBps / res.Rate // bytes per message, for now
					}
					sum.Count += res.Count
					sum.Seconds += res.Seconds
				}
			}
		}
		for _, key := range keys {
			res := sums[key]
			if res.Seconds > 0 {
				res.Rate = float64(res.Count) / res.Seconds
				res.MBps *= res.Rate
			}
			row := rows[key]
			if row == nil {
				row = &MsgReport{Impl: res.Impl, Serialization: res.Serialization, Kind: res.Kind, Size: res.Size}
				rows[key] = row
				rep.Messages = append(rep.Messages, row)
			}
			row.Rounds = append(row.Rounds, *res)
			if res.Error != "" {
				m.logf("round %d messages %s: %s", r+1, key, res.Error)
				rep.Failed = true
			} else {
				m.logf("round %d messages %-28s %9.0f/s %8.1f MB/s", r+1, key, res.Rate, res.MBps)
			}
		}
	}
	for _, row := range rep.Messages {
		row.summarize()
	}
	slices.SortStableFunc(rep.Messages, func(a, b *MsgReport) int {
		return strings.Compare(a.sortKey(), b.sortKey())
	})
}

func (m *measurer) listen(rep *Report, modes []*ModeReport) {
	runner := server.Runner{Stderr: m.log}
	if m.o.cpuprofile != "" {
		runner.Env = []string{server.EnvProfile + "=" + m.o.cpuprofile}
	}
	var policies []string
	for _, mr := range modes {
		if mr.Mode == "rr" || mr.Mode == "none" || mr.Mode == "reuseport" {
			policies = append(policies, mr.Mode)
		}
	}
	rows := map[string]*ListenReport{}
	for r := range m.o.Rounds {
		for _, p := range rotate(policies, r) {
			if m.ctx.Err() != nil {
				return
			}
			res, err := runner.Listen(p, server.ListenConfig{Iterations: m.o.ListenIters})
			row := rows[p]
			if row == nil {
				row = &ListenReport{Mode: p}
				rows[p] = row
				rep.Listen = append(rep.Listen, row)
			}
			if err != nil {
				m.logf("round %d listen %s: %v", r+1, p, err)
				rep.Failed = true
				continue
			}
			m.logf("round %d listen %-9s mean %.0fµs p99 %.0fµs (in Listen %.0fµs)", r+1, p, res.Mean/1e3, res.P99/1e3, res.Listen/1e3)
			row.Rounds = append(row.Rounds, res)
		}
	}
	for _, row := range rep.Listen {
		row.summarize()
	}
}

var wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// wrk measures keep-alive requests/s with wrk, one thread.
func wrk(ctx context.Context, addr string, conns int, d time.Duration) (load.Result, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, "wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s", "http://"+addr+"/")
	out, err := cmd.Output()
	if err != nil {
		return load.Result{}, fmt.Errorf("wrk: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if mm := wrkRate.FindStringSubmatch(sc.Text()); mm != nil {
			rate, _ := strconv.ParseFloat(mm[1], 64)
			n := int64(rate * float64(secs))
			return load.Result{Count: n, Elapsed: time.Duration(secs) * time.Second}, nil
		}
	}
	return load.Result{}, fmt.Errorf("wrk: no Requests/sec in %q", out)
}
