package server

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill the server if the benchmark dies, so
// that no tree outlives it.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
