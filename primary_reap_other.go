//go:build !linux

package clusternet

// Runs in the primary: no orphan reaping outside Linux.

import (
	"log/slog"
	"syscall"
)

// WithSubreaper is Linux only (PR_SET_CHILD_SUBREAPER); elsewhere Run logs
// that it is not supported and goes on.
func WithSubreaper() RunOption {
	return func(c *runConfig) { c.subreaper = true }
}

func startReaper(log *slog.Logger, subreaper bool) (stop func()) {
	if subreaper {
		log.Warn("WithSubreaper is supported on Linux only; ignored")
	}
	return func() {}
}

// pinChild does nothing here: nothing reaps orphans.
func pinChild(*syscall.SysProcAttr) (release func()) { return func() {} }
