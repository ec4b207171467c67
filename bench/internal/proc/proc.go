// Package proc reads the CPU time of processes from /proc (Linux), so that
// the benchmarks can say how much CPU the primary and the workers spent per
// connection, whatever else the machine is doing.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// Stat is what the benchmarks read from /proc/<pid>/stat.
type Stat struct {
	CPU       time.Duration // utime + stime, all threads, dead ones included
	StartTime uint64        // in clock ticks since boot: tells a pid's reuse apart
	PPid      int
}

// Read returns pid's CPU time and start time.
func Read(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return parse(b)
}

// parse parses /proc/<pid>/stat: the command name, in parentheses, may hold
// spaces and parentheses, so the fields are counted from the last ')'.
func parse(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("proc: malformed stat %q", b)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("proc: stat has %d fields", len(f)+2)
	}
	num := func(n int) uint64 {
		v, _ := strconv.ParseUint(string(f[n-3]), 10, 64)
		return v
	}
	return Stat{
		CPU:       time.Duration(num(14)+num(15)) * clockTick,
		StartTime: num(22),
		PPid:      int(num(4)),
	}, nil
}

// CPU returns pid's CPU time: the sum of its threads' run time from
// /proc/<pid>/task/*/schedstat, in nanoseconds, or if that cannot be read,
// utime + stime from /proc/<pid>/stat, in clock ticks of 10ms (too coarse
// for a few hundred connections at light load). A thread that exits takes
// its time with it from the first; Go's and Node's threads live as long as
// their process.
func CPU(pid int) (time.Duration, error) {
	if d, err := schedCPU(pid); err == nil {
		return d, nil
	}
	s, err := Read(pid)
	return s.CPU, err
}

func schedCPU(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread just exited
			}
			return 0, err
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			return 0, fmt.Errorf("proc: malformed schedstat %q", b)
		}
		ns, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, err
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// System returns the machine's busy and total CPU time so far, all CPUs,
// from the first line of /proc/stat: so that a benchmark can tell how much
// CPU other processes took while it measured.
func System() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return 0, 0, fmt.Errorf("proc: malformed /proc/stat %q", line)
	}
	// user nice system idle iowait irq softirq steal guest guest_nice;
	// guest time is already in user.
	for i, v := range f[1:] {
		if i >= 8 {
			break
		}
		n, _ := strconv.ParseUint(string(v), 10, 64)
		d := time.Duration(n) * clockTick
		total += d
		if i != 3 && i != 4 { // idle, iowait
			busy += d
		}
	}
	return busy, total, nil
}

// Alive reports whether pid is still the process that started at startTime
// (and not a zombie), so that a pid is never signalled after its reuse.
func Alive(pid int, startTime uint64) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s, err := parse(b)
	if err != nil || s.StartTime != startTime {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := bytes.Fields(b[i+1:])
	return len(f) > 0 && string(f[0]) != "Z"
}
