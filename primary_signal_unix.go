//go:build unix

package clusternet

import (
	"os"
	"syscall"
)

// reloadSignals are Run's default reload signals.
var reloadSignals = []os.Signal{syscall.SIGHUP}
