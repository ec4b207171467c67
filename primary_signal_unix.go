//go:build unix

package clusternet

// Runs in the primary: the signals Run handles by default (Unix).

import (
	"os"
	"syscall"
)

// reloadSignals are Run's default reload signals.
var reloadSignals = []os.Signal{syscall.SIGHUP}

// upgradeSignals are Run's default upgrade signals (nginx's and unicorn's).
var upgradeSignals = []os.Signal{syscall.SIGUSR2}
