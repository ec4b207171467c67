package clusternet

import (
	"fmt"
	"io"
	"os"
	"testing"
)

func init() {
	// pm-print writes to its stdout and stderr and reports how much stdin
	// it read; with Silent, stdin is empty.
	helpers["pm-print"] = func() {
		in, err := io.ReadAll(os.Stdin)
		fmt.Printf("out: %d bytes of stdin, err %v\n", len(in), err)
		fmt.Fprintln(os.Stderr, "err: to stderr")
	}
}

// Silent sends the worker's output to Worker.Stdout/Stderr and gives it an
// empty stdin; without Silent, Stdout and Stderr are nil.
func TestProcessSilent(t *testing.T) {
	plain := fork(t, "idle")
	if plain.Stdout() != nil || plain.Stderr() != nil {
		t.Errorf("a worker forked without Silent has Stdout() %v, Stderr() %v; want nil", plain.Stdout(), plain.Stderr())
	}
	withSettings(t, Settings{Silent: true})
	w := fork(t, "pm-print")
	if w.Stdout() == nil || w.Stderr() == nil {
		t.Fatal("Silent worker has no Stdout() or Stderr()")
	}
	out := pmReadAll(t, w.Stdout())
	errText := pmReadAll(t, w.Stderr())
	waitDone(t, w)
	if out != "out: 0 bytes of stdin, err <nil>\n" {
		t.Errorf("worker stdout = %q", out)
	}
	if errText != "err: to stderr\n" {
		t.Errorf("worker stderr = %q", errText)
	}
}
