//go:build unix

package proc

import (
	"syscall"
	"time"
)

// Self returns this process's CPU time (user + system) with microsecond
// resolution.
func Self() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
