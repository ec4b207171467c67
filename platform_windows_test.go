//go:build windows

package clusternet

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/windows"
)

// underWine reports whether the tests run under Wine, whose ntdll says so.
var underWine = windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil

// platformLacks says which features Windows, or Wine, does not have.
func platformLacks(feature string) string {
	switch feature {
	case "signals":
		return "Windows has no signals: Kill terminates the process whatever the signal"
	case "rr":
		return "Windows never round-robins: SchedRR falls back to SchedNone, as in Node"
	case "reuseport":
		return "Windows has no SO_REUSEPORT: with SO_REUSEADDR sockets share a port, but the system does not spread connections across them"
	case "unix":
		if underWine {
			return "Wine 8 has no AF_UNIX sockets (WSAEAFNOSUPPORT)"
		}
	case "udp":
		if underWine {
			return "Go's UDP sockets do not work under Wine 8: WSAIoctl(SIO_UDP_NETRESET) fails with WSAEOPNOTSUPP (10045)"
		}
	}
	return ""
}

// testTempDir is t.TempDir, except that under Wine, where Go's RemoveAll
// fails on directories ("unlinkat: Invalid function"), the cleanup removes
// the tree entry by entry.
func testTempDir(t testing.TB) string {
	if !underWine {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("", "clusternet-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var paths []string
		filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			paths = append(paths, p)
			return nil
		})
		for i := len(paths) - 1; i >= 0; i-- { // children before parents
			if err := os.Remove(paths[i]); err != nil {
				t.Errorf("removing the test's temporary files: %v", err)
			}
		}
	})
	return dir
}
