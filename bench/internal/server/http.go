package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/clusternet-go/clusternet"
)

// Body is the response body of every benchmark server, Go's and Node's.
var Body = []byte("Hello, World!\n")

var (
	hdrType      = []string{"text/plain"}
	hdrLength    = []string{strconv.Itoa(len(Body))}
	hdrKeep      = []string{"keep-alive"}
	hdrKeepAlive = []string{"timeout=5"}
	rawResponse  = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(Body)) + "\r\nConnection: close\r\n\r\n" + string(Body))
)

// counters is what a server process reports to the stats command.
type counters struct {
	conns atomic.Uint64
	reqs  atomic.Uint64
}

// handler is the benchmark's HTTP handler. It sends the headers Node's
// http module sends for res.writeHead(200, {Content-Type, Content-Length})
// (Connection and Keep-Alive included), so that both send the same bytes.
type handler struct{ c *counters }

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.c.reqs.Add(1)
	hd := w.Header()
	hd["Content-Type"] = hdrType
	hd["Content-Length"] = hdrLength
	if !r.Close {
		hd["Connection"] = hdrKeep
		hd["Keep-Alive"] = hdrKeepAlive
	}
	w.Write(Body)
}

// serve serves ln until it is closed. "raw" answers every connection with
// one fixed response and closes it, without reading more than one segment:
// the cost of a connection without net/http's.
func serve(ln net.Listener, kind string, c *counters) error {
	if kind == "raw" {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			c.conns.Add(1)
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				var buf [512]byte
				conn.Read(buf[:])
				c.reqs.Add(1)
				conn.Write(rawResponse)
			}()
		}
	}
	srv := &http.Server{
		Handler:  handler{c},
		ErrorLog: log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				c.conns.Add(1)
			}
		},
	}
	return srv.Serve(ln)
}

// Proc is one server process as the control protocol reports it.
type Proc struct {
	ID    int    `json:"id"`
	Pid   int    `json:"pid"`
	Conns uint64 `json:"conns"` // connections accepted so far
	Reqs  uint64 `json:"reqs"`  // requests answered so far
}

// Ready is the first line a server prints on stdout, once every worker listens.
type Ready struct {
	Addr    string `json:"addr"`
	Pid     int    `json:"pid"`
	Workers []Proc `json:"workers"`
}

// statsReply answers the "stats" command.
type statsReply struct {
	Workers []Proc `json:"workers"`
	Error   string `json:"error,omitempty"`
}

type statsRequest struct {
	Cmd string `json:"cmd"`
}

// control prints ready, then answers "stats" lines on stdin until "quit" or
// the end of stdin.
func control(ready Ready, stats func() ([]Proc, error)) error {
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(ready); err != nil {
		return err
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "stats":
			ps, err := stats()
			r := statsReply{Workers: ps}
			if err != nil {
				r.Error = err.Error()
			}
			if err := out.Encode(r); err != nil {
				return err
			}
		case "quit":
			return nil
		}
	}
	return nil
}

func plainServer(cfg Config) error {
	ln, err := net.Listen("tcp", cfg.addr())
	if err != nil {
		return err
	}
	defer ln.Close()
	var c counters
	go serve(ln, cfg.Handler, &c)
	self := Proc{ID: 1, Pid: os.Getpid()}
	return control(Ready{Addr: ln.Addr().String(), Pid: os.Getpid(), Workers: []Proc{self}}, func() ([]Proc, error) {
		p := self
		p.Conns, p.Reqs = c.conns.Load(), c.reqs.Load()
		return []Proc{p}, nil
	})
}

func clusterPrimary(cfg Config) error {
	n := max(cfg.Workers, 1)
	s, err := workerSettings()
	if err != nil {
		return err
	}
	if cfg.NodeScript != "" {
		// Node's server.js: its worker half serves the same bytes, and
		// answers {cmd: "stats"} as httpWorker does.
		s.Exec, s.Args = cfg.NodeExec, []string{cfg.NodeScript}
		s.NodeIPC, s.NodeWindow = true, cfg.NodeWindow
	}
	if err := clusternet.SetupPrimary(s); err != nil {
		return err
	}
	type listening struct {
		w *clusternet.Worker
		a clusternet.Address
	}
	ls := make(chan listening, n)
	clusternet.OnListening(func(w *clusternet.Worker, a clusternet.Address) {
		select {
		case ls <- listening{w, a}:
		default:
		}
	})
	replies := make(chan Proc, 4*n)
	clusternet.OnMessage(func(w *clusternet.Worker, m clusternet.Message) {
		var p Proc
		if m.Decode(&p) == nil {
			select {
			case replies <- p:
			default:
			}
		}
	})
	clusternet.OnExit(func(w *clusternet.Worker, st clusternet.ExitStatus) {
		if !w.ExitedAfterDisconnect() {
			fmt.Fprintf(os.Stderr, "bench server: worker %d (pid %d) died: %v\n", w.ID(), w.Process().Pid, st)
		}
	})
	env := []string{envWorkerRole + "=http", "GOMAXPROCS=" + strconv.Itoa(max(cfg.Procs, 1))}
	defer shutdown()
	for range n {
		if _, err := clusternet.Fork(env...); err != nil {
			return err
		}
	}
	ready := Ready{Pid: os.Getpid()}
	timeout := time.After(30 * time.Second)
	for len(ready.Workers) < n {
		select {
		case l := <-ls:
			ready.Addr = l.a.String()
			ready.Workers = append(ready.Workers, Proc{ID: l.w.ID(), Pid: l.w.Process().Pid})
		case <-timeout:
			return fmt.Errorf("%d of %d workers listening after 30s", len(ready.Workers), n)
		}
	}
	return control(ready, func() ([]Proc, error) {
		for len(replies) > 0 {
			<-replies
		}
		ws := clusternet.Workers()
		for _, w := range ws {
			w.Send(statsRequest{Cmd: "stats"})
		}
		var ps []Proc
		timeout := time.After(10 * time.Second)
		for len(ps) < len(ws) {
			select {
			case p := <-replies:
				ps = append(ps, p)
			case <-timeout:
				return ps, fmt.Errorf("%d of %d workers answered", len(ps), len(ws))
			}
		}
		return ps, nil
	})
}

// shutdown disconnects the workers, and kills those that linger.
func shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := clusternet.Disconnect(ctx); err == nil {
		return
	}
	for _, w := range clusternet.Workers() {
		w.Kill(os.Kill)
		select {
		case <-w.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func httpWorker(cfg Config) {
	ln, err := clusternet.Listen("tcp", cfg.addr())
	if err != nil {
		fatalf("listen: %v", err)
	}
	var c counters
	self := clusternet.Self()
	self.OnMessage(func(m clusternet.Message) {
		self.Send(Proc{ID: self.ID(), Pid: os.Getpid(), Conns: c.conns.Load(), Reqs: c.reqs.Load()})
	})
	err = serve(ln, cfg.Handler, &c)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		fatalf("serve: %v", err)
	}
	select {} // Disconnect ends the process once the connections are closed
}
