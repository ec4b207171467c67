//go:build unix && !linux

package clusternet

// Runs in the primary: starting workers, the other Unix systems' part.

import "syscall"

// setParentDeathSignal does nothing here: only Linux has a parent-death
// signal. Workers still exit when their channel reaches end of file.
func setParentDeathSignal(*syscall.SysProcAttr) {}

func onForkThread(fn func()) { fn() }
