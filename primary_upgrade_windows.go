package clusternet

// Runs in the primary: Upgrade on Windows, where a primary cannot hand its
// sockets to another process the way it hands them to workers while it
// keeps serving them: there is no upgrade.

import (
	"context"
	"errors"
	"fmt"
)

func upgradeCluster(context.Context, *supervisor) error {
	return fmt.Errorf("clusternet: Upgrade: %w on Windows", errors.ErrUnsupported)
}

func upgradeErr() error                     { activatedSockets(); return nil }
func inheritingUpgrade() bool               { return false }
func upgradePoke()                          {}
func forwardConns(string, []sysHandle) bool { return false }
func upgradedAway() bool                    { return false }
func (sa *sharedAddr) takeInherited() bool  { return false }
