//go:build windows

package clusternet

import (
	"errors"
	"os"
)

// stopSignal is how startPrimary's cleanup stops a primary: Windows has no
// signal to ask with.
var stopSignal os.Signal = os.Kill

// Descriptors are not counted on Windows: the tests that need the count
// skip (openFDs) or check nothing.

func countFDs() (int, error) { return 0, errors.ErrUnsupported }

func fdList() string { return "" }
