//go:build unix

package clusternet

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// stopSignal is how startPrimary's cleanup asks a primary to stop.
var stopSignal os.Signal = syscall.SIGTERM

// fdDir lists this process's descriptors.
var fdDir = func() string {
	if runtime.GOOS == "linux" {
		return "/proc/self/fd"
	}
	return "/dev/fd"
}()

// countFDs returns the number of descriptors this process has open, less
// the one that reads them.
func countFDs() (int, error) {
	d, err := os.Open(fdDir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	own := strconv.Itoa(int(d.Fd()))
	n := 0
	for _, name := range names {
		if name != own {
			n++
		}
	}
	return n, nil
}

// fdList describes this process's open descriptors, "fd->what" in order,
// for failure messages.
func fdList() string {
	ents, _ := os.ReadDir(fdDir)
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(fdDir, e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// processGone reports whether process pid has ended (a zombie has).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil { // no /proc here, or no such process
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	// pid (comm) state ...: comm may hold anything, so look after the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}
