package proc

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	line := "123 (a (weird) name) S 1 123 123 0 -1 4194560 1000 0 0 0 250 70 0 0 20 0 4 0 98765 1000000 200 18446744073709551615\n"
	s, err := parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.CPU != 3200*time.Millisecond || s.StartTime != 98765 || s.PPid != 1 {
		t.Errorf("parse: %+v", s)
	}
}

func TestSelf(t *testing.T) {
	// Linux's /proc, by pid: under Wine a Windows binary sees the Linux
	// /proc through drive Z:, but its pids are not Linux's.
	if runtime.GOOS != "linux" {
		t.Skip("reads Linux's /proc")
	}
	st, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !Alive(os.Getpid(), st.StartTime) || Alive(os.Getpid(), st.StartTime+1) {
		t.Error("Alive does not recognize this process")
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	if Self() <= 0 {
		t.Error("Self reports no CPU time")
	}
	if d, err := CPU(os.Getpid()); err != nil || d <= 0 {
		t.Errorf("CPU: %v, %v", d, err)
	}
	if busy, total, err := System(); err != nil || busy <= 0 || total < busy {
		t.Errorf("System: %v, %v, %v", busy, total, err)
	}
}
