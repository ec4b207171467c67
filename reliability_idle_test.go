//go:build unix

package clusternet

// Connections that never send a request do not hold a drain up: ServeHTTP
// closes them at once where it can know that nothing arrived on them (TCP on
// Linux), and otherwise as http.Server.Shutdown would, once they have
// waited 5 s for a request; requests in progress, or half sent, are still
// answered.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	// idle-http serves HTTP with ServeHTTP on IDLE_NET, IDLE_ADDR, with a
	// ConnState hook of its own that says "new" for every connection; "/slow"
	// says "slow" and answers 500 ms later. It says "draining" when Draining
	// closes.
	helpers["idle-http"] = func() {
		ln, err := Listen(os.Getenv("IDLE_NET"), os.Getenv("IDLE_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "idle-http:", err)
			os.Exit(1)
		}
		go func() {
			<-Draining()
			Self().Send("draining")
		}()
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					Self().Send("slow")
					time.Sleep(500 * time.Millisecond)
				}
				fmt.Fprintf(w, "worker %d", Self().ID())
			}),
			ConnState: func(c net.Conn, st http.ConnState) {
				if st == http.StateNew {
					Self().Send("new")
				}
			},
		}
		err = ServeHTTP(srv, ln)
		fmt.Fprintln(os.Stderr, "idle-http: ServeHTTP returned", err)
		os.Exit(1)
	}
}

// idleShutdownTimeout is Run's shutdown timeout in TestIdleConnsReload: far
// longer than the test waits (testTimeout), so that a worker held up by its
// idle connections fails the test by making it time out, not by being
// killed.
const idleShutdownTimeout = 60 * time.Second

// Reloads while a worker holds 40 connections that never sent a byte: the
// reload finishes, the old worker exits with code 0, and every idle
// connection is closed. Over TCP a reload with only those open (for 300 ms)
// is timed against one with nothing open; then, over TCP and over a Unix
// socket, 40 just opened, 8 requests in progress and 8 half sent (the rest
// is sent once the drain has begun): every request is answered. Over TCP on
// Linux ServeHTTP knows that nothing arrived on the idle connections and
// closes them once their retransmission timeout (200 ms) has passed since
// they were accepted; over a Unix socket it cannot, and closes them once
// they have waited 5 s for a request, as http.Server.Shutdown does.
func TestIdleConnsReload(t *testing.T) {
	type phase struct{ idle, busy int }
	for _, tc := range []struct {
		network string
		phases  []phase
	}{
		{"tcp4", []phase{{0, 0}, {40, 0}, {40, 8}}},
		{"unix", []phase{{40, 8}}},
	} {
		t.Run(tc.network, func(t *testing.T) {
			network, addr := tc.network, freePort(t)
			if network == "unix" {
				require(t, "unix")
				addr = filepath.Join(t.TempDir(), "idle.sock")
			}
			withSettings(t, Settings{Env: []string{envHelper + "=idle-http", "IDLE_NET=" + network, "IDLE_ADDR=" + addr}})
			startRun(t, 1, WithShutdownTimeout(idleShutdownTimeout))
			old := waitListening(t, 1)[0]
			var took []string
			for _, ph := range tc.phases {
				idleReload(t, network, addr, old, ph.idle, ph.busy, &took)
				if t.Failed() {
					return
				}
				nw := waitListening(t, 1)[0]
				if nw == old {
					t.Fatalf("worker %d was not replaced", old.ID())
				}
				old = nw
			}
			t.Logf("%s, %s: a reload took %s", runtime.GOOS, network, strings.Join(took, "; "))
		})
	}
}

// idleReload opens idle connections to old that send nothing, and busy
// connections with a request in progress and busy with a request half
// sent, reloads, and checks that the reload succeeds, old exits with code
// 0, every request is answered and every idle connection closed. It
// appends how long the reload took to took.
func idleReload(t *testing.T, network, addr string, old *Worker, idle, busy int, took *[]string) {
	t.Helper()
	in := messages(old)
	dial := func() net.Conn {
		c, err := net.Dial(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(testTimeout))
		return c
	}
	var idles, slows, halves []net.Conn
	for range idle {
		idles = append(idles, dial())
	}
	for range busy {
		c := dial()
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: idle\r\n\r\n")
		slows = append(slows, c)
		c = dial()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: idle\r\n")
		halves = append(halves, c)
	}
	// Every connection is the old worker's before the reload begins.
	for news, slow := 0, 0; news < idle+2*busy || slow < busy; {
		switch m := recvString(t, in, old); m {
		case "new":
			news++
		case "slow":
			slow++
		default:
			t.Fatalf("worker %d said %q", old.ID(), m)
		}
	}

	if busy == 0 {
		// As connections a client's pool opened a while ago: past the
		// retransmission timeout during which ServeHTTP leaves them be.
		time.Sleep(300 * time.Millisecond)
	}
	start := time.Now()
	reloaded := make(chan error, 1)
	go func() { reloaded <- Reload(testContext(t)) }()
	if busy > 0 {
		// The half-sent requests hold the drain: the worker cannot have
		// exited before it said so.
		if m := recvString(t, in, old); m != "draining" {
			t.Fatalf("worker %d said %q, want draining", old.ID(), m)
		}
		for _, c := range halves {
			io.WriteString(c, "\r\n") // the end of the request, once the drain has begun
		}
	}
	err := recv(t, reloaded, "the reload to finish")
	what := "nothing open"
	if idle > 0 && busy == 0 {
		what = fmt.Sprintf("%d idle connections open for 300 ms", idle)
	} else if idle > 0 {
		what = fmt.Sprintf("%d idle connections just opened", idle)
	}
	if busy > 0 {
		what += fmt.Sprintf(", %d requests in progress (500 ms), %d half sent", busy, busy)
	}
	*took = append(*took, fmt.Sprintf("%v with %s", time.Since(start).Round(time.Millisecond), what))
	if err != nil {
		t.Fatalf("Reload with %s: %v", what, err)
	}
	if st := old.exitStatus(); st.Code != 0 || st.Signal != nil {
		t.Errorf("worker %d: %v, want exit code 0", old.ID(), st)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	failed := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	want := fmt.Sprintf("worker %d", old.ID())
	for i, c := range append(slows, halves...) {
		wg.Go(func() {
			body, err := idleReadResponse(c)
			if err != nil || body != want {
				failed("request %d: %q, %v; want %q", i, body, err, want)
			}
		})
	}
	for i, c := range idles {
		wg.Go(func() {
			if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				failed("idle connection %d: read %d bytes, %v; want it closed (EOF)", i, n, err)
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
}

// idleReadResponse reads one response from c and returns its body.
func idleReadResponse(c net.Conn) (string, error) {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}
