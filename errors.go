package clusternet

import "errors"

// Sentinel errors, checked with errors.Is.
var (
	// ErrNotPrimary is returned by calls that only the primary may make
	// (Fork, SetupPrimary, SetSchedulingPolicy, Disconnect) when made in a worker.
	ErrNotPrimary = errors.New("clusternet: not the primary process")

	// ErrNotWorker is returned by worker-only calls made outside a worker.
	ErrNotWorker = errors.New("clusternet: not a worker process")

	// ErrChannelClosed is returned by Send and Listen once the channel between
	// the primary and the worker is closed.
	ErrChannelClosed = errors.New("clusternet: channel closed")

	// ErrPolicyFrozen is returned by SetSchedulingPolicy after the first Fork
	// or SetupPrimary: as in Node, the policy is fixed from then on.
	ErrPolicyFrozen = errors.New("clusternet: scheduling policy is frozen after the first Fork or SetupPrimary")

	// ErrInvalidHandle is returned when a handle cannot be sent (it is not a
	// net.Conn, net.Listener, net.PacketConn or *os.File backed by a socket
	// or file descriptor) or a received message has no handle of the kind asked for.
	ErrInvalidHandle = errors.New("clusternet: invalid handle")

	// ErrNoChannel is returned in a process that has CLUSTERNET_WORKER_ID set
	// but did not inherit a channel from a clusternet primary.
	ErrNoChannel = errors.New("clusternet: CLUSTERNET_WORKER_ID is set but no channel to the primary was inherited")

	// ErrProtocol is wrapped by the errors reported when the peer breaks the
	// channel protocol: malformed or oversized frames, unannounced handles.
	ErrProtocol = errors.New("clusternet: protocol error")

	// ErrVersion is wrapped by the error reported when a worker speaks a
	// protocol version the primary does not (a worker built from another
	// clusternet release); the worker is refused. Upgrade's error wraps it
	// when the new primary speaks another handover version.
	ErrVersion = errors.New("clusternet: protocol version mismatch")

	// ErrUpgradeInProgress is returned by Upgrade while another upgrade of
	// this primary is under way.
	ErrUpgradeInProgress = errors.New("clusternet: an upgrade is already under way")
)
