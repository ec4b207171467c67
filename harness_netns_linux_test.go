package clusternet

// Tests whose primary runs in a network namespace of its own (Linux, root):
// there it may bind the wildcard address, or change the namespace's
// sysctls, and still talk to loopback only. Making one needs root (CI runs
// as root).

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// netnsPrimary runs the test binary as the primary role, with env, in a
// network namespace of its own, and reports what it says on its standard
// output, a line each: "fail: why" fails the test, "skip: why" skips it,
// "log: what" is logged, and "done" ends it. need says why the test needs
// root, for its skip without it.
func netnsPrimary(t *testing.T, need, role string, env ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s (CI runs as root)", need)
	}
	probe := exec.Command("/bin/true")
	probe.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := probe.Run(); err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
	cmd := primaryCommand(t, role, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	p := runPrimary(t, cmd)
	for {
		line := p.line(t)
		if why, ok := strings.CutPrefix(line, "skip: "); ok {
			p.wait(t)
			t.Skip(why)
		}
		if why, ok := strings.CutPrefix(line, "fail: "); ok {
			t.Error(why)
		}
		if what, ok := strings.CutPrefix(line, "log: "); ok {
			t.Log(what)
		}
		if line == "done" {
			break
		}
	}
	if err := p.wait(t); err != nil {
		t.Errorf("the primary exited with %v", err)
	}
}
