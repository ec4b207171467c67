//go:build !linux

package server

import "os/exec"

func setDeathSignal(cmd *exec.Cmd) {}
