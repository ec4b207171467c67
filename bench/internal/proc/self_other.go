//go:build !unix

package proc

import "time"

// Self returns 0: the benchmarks measure CPU time on Linux only.
func Self() time.Duration { return 0 }
