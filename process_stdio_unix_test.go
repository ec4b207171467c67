//go:build unix

package clusternet

// Stdin, Stdout and Stderr that are not files, and Settings.ExtraFiles.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	// pm-stdio reads its stdin, writes it upper-cased to stdout, a line to
	// stderr and a line to descriptor 3 (Settings.ExtraFiles[0]).
	helpers["pm-stdio"] = func() {
		in, err := io.ReadAll(os.Stdin)
		if err != nil {
			os.Exit(9)
		}
		os.Stdout.WriteString(strings.ToUpper(string(in)))
		fmt.Fprintf(os.Stderr, "stderr: read %d bytes\n", len(in))
		extra := os.NewFile(3, "extra")
		if _, err := extra.WriteString("through descriptor 3\n"); err != nil {
			os.Exit(10)
		}
		extra.Close()
	}
}

// pmSyncBuffer is an io.Writer that is not an *os.File, safe to read while
// the package writes to it.
type pmSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *pmSyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *pmSyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitString waits until b holds want; the package copies a worker's
// output on its own goroutines, which may finish after the exit event.
func (b *pmSyncBuffer) waitString(t testing.TB, want, what string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for b.String() != want {
		if time.Now().After(deadline) {
			t.Errorf("%s = %q, want %q", what, b.String(), want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Custom stdio: Stdin, Stdout and Stderr that are not files, and an extra
// descriptor from Settings.ExtraFiles.
func TestProcessCustomStdio(t *testing.T) {
	var stdout, stderr pmSyncBuffer
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	withSettings(t, Settings{
		Stdin:      strings.NewReader("text for the worker's stdin"),
		Stdout:     &stdout,
		Stderr:     &stderr,
		ExtraFiles: []*os.File{pw},
	})
	w := fork(t, "pm-stdio")
	pw.Close() // the worker has its own copy
	if w.Stdout() != nil || w.Stderr() != nil {
		t.Errorf("Stdout() and Stderr() must be nil when Settings.Stdout and Stderr are set")
	}
	status := pmOnExit(w)
	pr.SetReadDeadline(time.Now().Add(testTimeout))
	extra, err := io.ReadAll(pr)
	if string(extra) != "through descriptor 3\n" || err != nil {
		t.Errorf("descriptor 3: %q, %v", extra, err)
	}
	if st := recv(t, status, "the exit event"); st != (ExitStatus{}) {
		t.Errorf("worker exit: %v", st)
	}
	stdout.waitString(t, "TEXT FOR THE WORKER'S STDIN", "worker stdout")
	stderr.waitString(t, "stderr: read 27 bytes\n", "worker stderr")
}
