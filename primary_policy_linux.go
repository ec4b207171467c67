package clusternet

// Runs in the primary: whether the kernel migrates the queue of a closing
// SO_REUSEPORT socket (Linux).

import (
	"os"
	"strings"
)

// migratesReusePortQueues reports whether net.ipv4.tcp_migrate_req is on in
// this network namespace (Linux 5.14 and later): the kernel then moves the
// connections queued on a closing SO_REUSEPORT socket to its siblings, so a
// worker that dies or is scaled away under SchedReusePort loses none. The
// package never sets it: it is the operator's (sysctl, or the container
// runtime's per-namespace sysctls).
func migratesReusePortQueues() (bool, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
