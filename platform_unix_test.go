//go:build unix

package clusternet

import "testing"

// testTempDir is t.TempDir (Windows needs more under Wine).
func testTempDir(t testing.TB) string { return t.TempDir() }

// platformLacks: Unix has every feature the tests use.
func platformLacks(feature string) string { return "" }
