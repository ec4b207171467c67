package clusternet

import "testing"

// nodeSkipIfPort42Allowed: Node skips its privileged-port tests on Windows
// ("not reliable on Windows").
func nodeSkipIfPort42Allowed(t *testing.T) {
	t.Skip("not reliable on Windows, as in Node")
}
