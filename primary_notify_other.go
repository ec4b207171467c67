//go:build !linux

package clusternet

// Runs in the primary: no MONOTONIC_USEC= outside Linux, where systemd is.

func monotonicUsec() string { return "" }
