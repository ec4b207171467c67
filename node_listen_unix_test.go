//go:build unix

package clusternet

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// nodeSkipIfPort42Allowed skips t where Node's privileged-port tests skip.
func nodeSkipIfPort42Allowed(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "darwin" {
		t.Skip("macOS may allow ordinary processes to use any port")
	}
	if os.Getuid() == 0 {
		t.Skip("not to be run as root: root may bind port 42")
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n <= 42 {
			t.Skip("port 42 is unprivileged here")
		}
	}
}
