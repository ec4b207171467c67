//go:build !linux

package clusternet

// Runs in the primary: no migration of SO_REUSEPORT queues outside Linux.

import "errors"

func migratesReusePortQueues() (bool, error) {
	return false, errors.New("net.ipv4.tcp_migrate_req is Linux's")
}
