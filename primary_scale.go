package clusternet

// Runs in the primary: changing the number of workers Run keeps.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
)

// Scale sets the number of workers Run keeps to n (n <= 0: one per CPU),
// as PM2's scale and einhorn's inc/dec do. Scaling up forks the new workers
// at once. Scaling down disconnects the newest workers gracefully, as a
// reload disconnects the old ones: they stop accepting, finish their
// connections (queued ones go to the others under SchedRR) and exit, and
// are killed after the shutdown timeout. Scale returns before the new
// workers listen or the old ones exit; Stats().Target is the new count.
//
// It returns ErrNotPrimary in a worker, and an error if Run is not running
// or is shutting down.
func Scale(n int) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	s := runningSupervisor()
	if s == nil {
		return errors.New("clusternet: Scale: Run is not running")
	}
	return s.scale(n)
}

// WithScaleSignals makes Run add a worker on up and remove one on down:
// einhorn's and unicorn's convention is syscall.SIGTTIN and syscall.SIGTTOU.
// Off by default (a background job that reads its terminal gets SIGTTIN
// from the kernel).
func WithScaleSignals(up, down os.Signal) RunOption {
	return func(c *runConfig) { c.scaleUp, c.scaleDown = up, down }
}

func (s *supervisor) scale(n int) error {
	if n <= 0 {
		n = runtime.NumCPU()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return errors.New("clusternet: Scale: the cluster is shutting down")
	}
	from := len(s.slots)
	for len(s.slots) < n {
		s.lastSlot++
		sl := &slot{index: s.lastSlot}
		s.slots = append(s.slots, sl)
		if w, err := s.forkLocked(sl, nil); err == nil {
			sl.w = w
		} else {
			sl.failed++
			s.scheduleLocked(sl, s.cfg.minBackoff)
		}
	}
	if len(s.slots) > n {
		// The newest workers go first; slots being refilled before any.
		age := func(sl *slot) int {
			if sl.w == nil {
				return int(^uint(0) >> 1)
			}
			return sl.w.ID()
		}
		slices.SortStableFunc(s.slots, func(a, b *slot) int { return age(b) - age(a) })
		for _, sl := range s.slots[:len(s.slots)-n] {
			sl.removed = true
			if sl.refill != nil {
				sl.refill.Stop()
				sl.refill = nil
			}
			if w := sl.w; w != nil {
				sl.w = nil
				delete(s.of, w)
				s.log.Info("scaling down: disconnecting", "slot", sl.index, "id", w.ID())
				go retire(context.Background(), w, s.cfg.shutdownTimeout, s.log)
			}
		}
		s.slots = slices.Clone(s.slots[len(s.slots)-n:])
		slices.SortFunc(s.slots, func(a, b *slot) int { return a.index - b.index })
	}
	s.log.Info("scaled", "from", from, "to", n)
	s.notify.send(fmt.Sprintf("STATUS=serving: scaled from %d to %d workers", from, n))
	return nil
}
