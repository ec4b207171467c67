package clusternet

// Runs in the primary: the signals Run handles by default (Windows).

import "os"

// reloadSignals are Run's default reload signals: Windows has no SIGHUP.
var reloadSignals []os.Signal

// upgradeSignals are Run's default upgrade signals: Windows has no upgrade.
var upgradeSignals []os.Signal
