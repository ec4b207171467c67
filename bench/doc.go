// Package bench holds the end-to-end benchmarks of clusternet (go test
// -bench . ./bench): connections handed off per second for each scheduling
// policy, message round trips and one-way throughput, and Listen latency.
// The comparison with plain net.Listen and Node's cluster module is the
// command in bench/compare; see bench/README.md.
//
// The benchmarks re-execute the test binary as the server's process tree
// (the scheduling policy is fixed once a process has forked), with the roles
// in bench/internal/server, and generate load from the test process itself.
package bench
