package clusternet

import "os"

// reloadSignals are Run's default reload signals: Windows has no SIGHUP.
var reloadSignals []os.Signal
