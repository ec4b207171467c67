//go:build unix

package clusternet

// platformLacks: Unix has every feature the tests use.
func platformLacks(feature string) string { return "" }
