//go:build windows

package clusternet

// Runs in the primary: Windows never round-robins (SchedRR is SchedNone
// there, see Policy.effective), as in Node; these only say so.

import (
	"errors"
	"fmt"
	"syscall"
)

// Round-robin handoff (rr.go) is never done on Windows: SchedRR is
// SchedNone there (see Policy.effective), as in Node. These functions only
// say so.
var errNoHandoff = fmt.Errorf("clusternet: round-robin handoff on Windows: %w", errors.ErrUnsupported)

func acceptBatch(rc syscall.RawConn, limit int) ([]sysHandle, error) { return nil, errNoHandoff }

func newHandoff() (out, peer sysHandle, err error) { return 0, 0, errNoHandoff }

func dupFD(fd sysHandle) (sysHandle, error) { return 0, errNoHandoff }

func sendConns(out sysHandle, conns []sysHandle, records []byte) (int, error) { return 0, errNoHandoff }

func queuedConns(peer sysHandle) (int, error) { return 0, errNoHandoff }

func recvQueued(peer sysHandle) []sysHandle { return nil }
