// Command websocket is a WebSocket echo server that runs as a cluster and
// lets its clients go cleanly when a worker leaves. On a reload (SIGHUP) or
// a shutdown (SIGINT, SIGTERM), a leaving worker sends each of its sockets a
// close frame with status 1001, going away, on which the client reconnects,
// to a worker that stays.
//
//	go run ./examples/websocket -workers 4 -addr :8000
//	open http://localhost:8000/ and type; kill -HUP the primary meanwhile
//
// A WebSocket is taken out of net/http (hijacked), so clusternet.ServeHTTP
// cannot close it: without clusternet.Draining a leaving worker would wait
// for its clients until Run's shutdown timeout killed it, and every socket
// would end without a close frame.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/clusternet-go/clusternet"
	"github.com/coder/websocket"
)

func main() {
	workers := flag.Int("workers", runtime.NumCPU(), "number of workers")
	addr := flag.String("addr", ":8000", "address to listen on")
	flag.Parse()
	// Workers run this same program with the same flags.
	if clusternet.IsWorker() {
		worker(*addr)
		return
	}
	primary(*workers)
}

func primary(n int) {
	log.Printf("primary %d: %d workers", os.Getpid(), n)
	clusternet.OnListening(func(w *clusternet.Worker, a clusternet.Address) {
		log.Printf("worker %d (pid %d) listening at %v", w.ID(), w.Process().Pid, a)
	})
	clusternet.OnExit(func(w *clusternet.Worker, st clusternet.ExitStatus) {
		log.Printf("worker %d (pid %d) exited (%v)", w.ID(), w.Process().Pid, st)
	})
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := clusternet.Run(context.Background(), n,
		clusternet.WithLogger(logger),
		clusternet.WithShutdownTimeout(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	log.Print("stopped")
}

func worker(addr string) {
	id := clusternet.Self().ID()
	ln, err := clusternet.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	var open sockets
	go func() {
		// The worker is leaving (a reload, a shutdown): its listeners close
		// next, and it exits once its connections are closed.
		<-clusternet.Draining()
		n := open.goAway()
		log.Printf("worker %d: draining; sent going away to %d sockets", id, n)
	}()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered the request
		}
		if !open.add(c) {
			// Accepted as the drain began: this one goes too.
			c.Close(websocket.StatusGoingAway, "server restarting")
			return
		}
		defer open.remove(c)
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return // the client left, or the socket was closed
			}
			if err := c.Write(r.Context(), typ, fmt.Appendf(nil, "worker %d: %s", id, msg)); err != nil {
				return
			}
		}
	})
	// ServeHTTP closes the connections net/http still has when the worker
	// leaves; the sockets are this program's to close.
	log.Fatal(clusternet.ServeHTTP(&http.Server{Handler: mux}, ln))
}

// sockets are a worker's open WebSockets.
type sockets struct {
	mu      sync.Mutex
	open    map[*websocket.Conn]bool
	leaving bool
}

// add records c and reports true, or reports false once goAway has run.
func (s *sockets) add(c *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaving {
		return false
	}
	if s.open == nil {
		s.open = make(map[*websocket.Conn]bool)
	}
	s.open[c] = true
	return true
}

func (s *sockets) remove(c *websocket.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, c)
}

// goAway closes every open socket with status 1001, going away, and returns
// how many it closed. The closes run at once: each waits for its client's
// close frame (up to 5 s) before it closes the connection.
func (s *sockets) goAway() int {
	s.mu.Lock()
	s.leaving = true
	all := make([]*websocket.Conn, 0, len(s.open))
	for c := range s.open {
		all = append(all, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Go(func() { c.Close(websocket.StatusGoingAway, "server restarting") })
	}
	wg.Wait()
	return len(all)
}

// page is a client: it echoes what is typed, and reconnects when its worker
// goes away.
const page = `<!doctype html>
<title>clusternet WebSocket echo</title>
<input id="say" autofocus placeholder="type, then Enter">
<pre id="log"></pre>
<script>
const log = s => document.getElementById("log").textContent += s + "\n";
let ws;
function connect() {
	ws = new WebSocket("ws" + location.protocol.slice(4) + "//" + location.host + "/ws");
	ws.onopen = () => log("connected");
	ws.onmessage = e => log(e.data);
	ws.onclose = e => {
		log("closed: " + e.code + " " + e.reason);
		if (e.code === 1001) connect(); // going away: another worker takes over
	};
}
connect();
document.getElementById("say").onkeydown = e => {
	if (e.key === "Enter") { ws.send(e.target.value); e.target.value = ""; }
};
</script>
`
