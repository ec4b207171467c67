//go:build unix

package clusternet

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func init() {
	// pm-unclaimed counts its descriptors, ignores the handles the primary
	// sends it, and sends handles the primary ignores.
	helpers["pm-unclaimed"] = func() {
		self := Self()
		r, w, err := os.Pipe()
		if err != nil {
			os.Exit(8)
		}
		defer w.Close()
		self.OnMessage(func(m Message) {
			var req pmUnclaimed
			m.Decode(&req)
			switch req.Op {
			case "count":
				n, err := countFDs()
				if err != nil {
					self.Send(pmUnclaimed{Op: "error: " + err.Error()})
					return
				}
				self.Send(pmUnclaimed{Op: "count", N: n})
			case "send":
				for range req.N {
					self.Send(pmUnclaimed{Op: "handle"}, WithHandle(r))
				}
				self.Send(pmUnclaimed{Op: "sent"})
			}
		})
		select {}
	}
}

type pmUnclaimed struct {
	Op string
	N  int
}

// Handles nobody takes are closed once the handlers return, on both
// sides: no descriptor leaks.
func TestProcessUnclaimedHandlesClosed(t *testing.T) {
	const n = 50
	w := fork(t, "pm-unclaimed")
	in := messages(w) // takes nothing
	query := func(req pmUnclaimed) pmUnclaimed {
		t.Helper()
		rep := ask[pmUnclaimed](t, w, in, req)
		if strings.HasPrefix(rep.Op, "error") {
			t.Skipf("worker: %s", rep.Op)
		}
		return rep
	}

	// Primary to worker.
	before := query(pmUnclaimed{Op: "count"}).N
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range n {
		if err := w.Send(pmUnclaimed{Op: "handle"}, WithHandle(f)); err != nil {
			t.Fatal(err)
		}
	}
	if after := query(pmUnclaimed{Op: "count"}).N; after > before {
		t.Errorf("worker: %d descriptors before %d unclaimed handles, %d after", before, n, after)
	}

	// Worker to primary.
	mine := openFDs(t)
	if err := w.Send(pmUnclaimed{Op: "send", N: n}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		m := recv(t, in, "the worker's handles")
		var rep pmUnclaimed
		m.Decode(&rep)
		if rep.Op == "sent" {
			if i != n {
				t.Errorf("got %d messages with handles, want %d", i, n)
			}
			break
		}
	}
	fdsAtMost(t, mine, fmt.Sprintf("primary after %d unclaimed handles", n))
}
