//go:build !linux

package clusternet

import (
	"errors"
	"syscall"
)

// Listen backlogs and socket options are observed through Linux
// interfaces; elsewhere the tests that need them skip.

func lnBacklog(rc syscall.RawConn) (int, error) { return 0, errors.ErrUnsupported }

func lnReusePort(rc syscall.RawConn) (bool, error) { return false, errors.ErrUnsupported }
