package clusternet

// Runs in the primary: the clock systemd's reload notification wants (Linux).

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// monotonicUsec is the MONOTONIC_USEC= line that systemd wants with
// RELOADING=1: now on CLOCK_MONOTONIC, in microseconds.
func monotonicUsec() string {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return ""
	}
	return "MONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}
