package clusternet

// Runs in the primary: replacing workers whose memory stays above a limit
// (PM2's max_memory_restart, through the reload path).

import (
	"context"
	"errors"
	"os"
	"time"
)

// memoryCheckEvery is how often Run reads its workers' memory with
// WithMaxMemory; memoryStrikes samples in a row above the limit replace a
// worker, so that a brief peak does not.
const (
	memoryCheckEvery = time.Second
	memoryStrikes    = 3
)

// WithMaxMemory makes Run replace a worker whose resident memory stays
// above limit bytes (three readings in a row, one a second) the way Reload
// replaces one: a new worker is forked and, once it listens where the old
// one did, the old one is disconnected and finishes its connections. No
// request is dropped, unlike a restart. Linux only (RSS is read from
// /proc); elsewhere the option is logged as unsupported and ignored.
func WithMaxMemory(limit uint64) RunOption {
	return func(c *runConfig) { c.maxMemory = limit }
}

// watchMemory samples the slots' workers until ctx ends and replaces those
// over the limit. The samples are read outside s.mu; the replacement runs
// under reloadMu, one at a time, as a reload's would.
func (s *supervisor) watchMemory(ctx context.Context, every time.Duration) {
	if _, _, err := processResources(os.Getpid()); errors.Is(err, errResourcesUnsupported) {
		s.log.Warn("WithMaxMemory is not supported here; ignored", "err", err)
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	strikes := make(map[*Worker]int)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		var ws []*Worker
		slotOf := make(map[*Worker]*slot)
		for _, sl := range s.slots {
			if sl.w != nil && sl.next == nil {
				ws = append(ws, sl.w)
				slotOf[sl.w] = sl
			}
		}
		s.mu.Unlock()
		seen := make(map[*Worker]int, len(ws))
		for _, w := range ws {
			rss, _, err := processResources(w.Process().Pid)
			if err != nil || rss <= s.cfg.maxMemory {
				continue
			}
			seen[w] = strikes[w] + 1
			if seen[w] < memoryStrikes {
				continue
			}
			delete(seen, w)
			s.log.Warn("worker over its memory limit; replacing it", "id", w.ID(), "rss", rss, "limit", s.cfg.maxMemory)
			reloadMu.Lock()
			err = s.replaceSlot(ctx, slotOf[w], w)
			reloadMu.Unlock()
			if err != nil {
				s.log.Error("replacing a worker over its memory limit failed", "id", w.ID(), "err", err)
			}
		}
		strikes = seen
	}
}
