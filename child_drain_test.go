package clusternet

// Draining: closed at the start of a worker's drain, whatever starts it,
// before its listeners close; nil outside a worker.

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
)

func init() {
	// drain-report listens, holds one connection to itself (so that its
	// drain waits for it), says "ready", then reports on Draining: whether
	// it was closed before and after its own Disconnect (DRAIN_SELF=1),
	// "draining" when it closes, and whether it was closed when Accept
	// failed because the listener closed. Then it lets the drain finish.
	helpers["drain-report"] = func() {
		state := func() string {
			select {
			case <-Draining():
				return "closed"
			default:
				return "open"
			}
		}
		ln, err := Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			exHelperFailed(err)
		}
		held := make(chan net.Conn, 1)
		atClose := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				exHelperFailed(err)
			}
			held <- c
			if _, err := ln.Accept(); err == nil {
				exHelperFailed(fmt.Errorf("a second connection"))
			}
			atClose <- state()
		}()
		client, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			exHelperFailed(err)
		}
		conn := <-held
		Self().Send("ready")
		if os.Getenv("DRAIN_SELF") == "1" {
			Self().Send("before: " + state())
			if err := Self().Disconnect(); err != nil {
				exHelperFailed(err)
			}
			Self().Send("after Disconnect: " + state())
		}
		<-Draining()
		Self().Send("draining")
		Self().Send("at the listener's close: " + <-atClose)
		conn.Close()
		client.Close()
		select {} // the drain ends the process
	}

	// ex-stream serves server-sent events on a loopback port: "hello", then,
	// when the worker drains, "bye" to end the stream (see ExampleDraining).
	helpers["ex-stream"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		if err != nil {
			exHelperFailed(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: hello\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-Draining():
				fmt.Fprint(w, "event: bye\ndata: reconnect\n\n")
			case <-r.Context().Done():
			}
		})}
		exHelperFailed(ServeHTTP(srv, ln))
	}
}

func TestDrainingOutsideWorker(t *testing.T) {
	if ch := Draining(); ch != nil {
		t.Errorf("Draining() in the primary = %v, want nil", ch)
	}
}

// Draining is closed when the drain starts, before the listeners close,
// whatever starts it; the worker then exits with code 0.
func TestDraining(t *testing.T) {
	for _, how := range []string{"Self().Disconnect", "Worker.Disconnect", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			var env []string
			var want []string
			switch how {
			case "Self().Disconnect":
				env = []string{"DRAIN_SELF=1"}
				want = []string{"before: open", "after Disconnect: closed"}
			case "SIGTERM":
				require(t, "signals")
			}
			want = append(want, "draining", "at the listener's close: closed")
			w := fork(t, "drain-report", env...)
			in := messages(w)
			if got := recvString(t, in, w); got != "ready" {
				t.Fatalf("worker said %q, want ready", got)
			}
			switch how {
			case "Worker.Disconnect":
				if err := w.Disconnect(); err != nil {
					t.Fatal(err)
				}
			case "SIGTERM":
				if err := w.Process().Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range want {
				if got := recvString(t, in, w); got != s {
					t.Errorf("worker said %q, want %q", got, s)
				}
			}
			waitDone(t, w)
			if st := w.exitStatus(); st.Code != 0 || st.Signal != nil {
				t.Errorf("worker exited with %v, want exit code 0", st)
			}
		})
	}
}

// recvString returns w's next message, a string.
func recvString(t *testing.T, in <-chan Message, w *Worker) string {
	t.Helper()
	var s string
	if m := recv(t, in, fmt.Sprintf("a message from worker %d", w.ID())); m.Decode(&s) != nil {
		t.Fatalf("worker %d sent %q, want a string", w.ID(), m.Raw())
	}
	return s
}
