//go:build !linux

package clusternet

// Shared: a process's memory and CPU time, where they are not read.

import "time"

func processResources(pid int) (rss uint64, cpu time.Duration, err error) {
	return 0, 0, errResourcesUnsupported
}
