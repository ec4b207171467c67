package clusternet

// Runs in the primary: the scheduling policy.

import (
	"fmt"
	"os"
	"runtime"
)

// Policy is how the primary shares a listening address among workers.
type Policy int

const (
	// SchedNone: the primary binds and sends the listening socket to the
	// workers, which accept on it directly; the kernel picks the worker.
	SchedNone Policy = 1
	// SchedRR: the primary accepts and hands each connection to the next
	// worker that is accepting. The default, except on Windows.
	SchedRR Policy = 2
	// SchedReusePort: the primary binds one SO_REUSEPORT socket per worker;
	// the kernel spreads connections across them.
	SchedReusePort Policy = 3
)

// String returns "none", "rr" or "reuseport", the values of
// CLUSTERNET_SCHED_POLICY.
func (p Policy) String() string {
	switch p {
	case SchedNone:
		return "none"
	case SchedRR:
		return "rr"
	case SchedReusePort:
		return "reuseport"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// envPolicy names the environment variable that sets the default policy,
// as NODE_CLUSTER_SCHED_POLICY does for Node.
const envPolicy = "CLUSTERNET_SCHED_POLICY"

func parsePolicy(s string) (Policy, error) {
	for _, p := range []Policy{SchedRR, SchedNone, SchedReusePort} {
		if s == p.String() {
			return p, nil
		}
	}
	return 0, fmt.Errorf("clusternet: %s=%q: want rr, none or reuseport", envPolicy, s)
}

// effective maps a policy to what the platform does: Windows never
// round-robins, so SchedRR is SchedNone there.
func (p Policy) effective() Policy {
	if p == SchedRR && runtime.GOOS == "windows" {
		return SchedNone
	}
	return p
}

// SetSchedulingPolicy sets the policy for every address the primary will
// share. It returns ErrNotPrimary in a worker and ErrPolicyFrozen after the
// first Fork or SetupPrimary, as Node's cluster.schedulingPolicy is frozen then.
func SetSchedulingPolicy(p Policy) error {
	if IsWorker() {
		return ErrNotPrimary
	}
	if p != SchedNone && p != SchedRR && p != SchedReusePort {
		return fmt.Errorf("clusternet: unknown scheduling policy %d", int(p))
	}
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	if cluster.frozen {
		return ErrPolicyFrozen
	}
	cluster.policy = p
	cluster.policyErr = nil
	return nil
}

// SchedulingPolicy returns the policy in force: the one set with
// SetSchedulingPolicy, else CLUSTERNET_SCHED_POLICY, else SchedRR (SchedNone
// on Windows, where SchedRR always falls back to SchedNone).
func SchedulingPolicy() Policy {
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	return cluster.policy.effective()
}

// defaultPolicy reads CLUSTERNET_SCHED_POLICY; a bad value is reported by Fork.
func defaultPolicy() (Policy, error) {
	v, ok := os.LookupEnv(envPolicy)
	if !ok || v == "" {
		return SchedRR, nil
	}
	p, err := parsePolicy(v)
	if err != nil {
		return SchedRR, err
	}
	return p, nil
}
