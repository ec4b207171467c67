// Command hello is an HTTP server that runs as a cluster: the primary forks
// workers, which all serve on the same address, and re-forks any worker that
// dies unexpectedly.
//
//	go run ./examples/hello -workers 4 -addr :8000
//	curl localhost:8000
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/clusternet-go/clusternet"
)

var policies = map[string]clusternet.Policy{
	"rr":        clusternet.SchedRR,
	"none":      clusternet.SchedNone,
	"reuseport": clusternet.SchedReusePort,
}

func main() {
	workers := flag.Int("workers", runtime.NumCPU(), "number of workers")
	addr := flag.String("addr", ":8000", "address to listen on")
	policy := flag.String("policy", "", "scheduling policy: rr, none or reuseport (default: $CLUSTERNET_SCHED_POLICY, else rr; none on Windows)")
	flag.Parse()
	// Workers run this same program with the same flags.
	if clusternet.IsWorker() {
		worker(*addr)
		return
	}
	if *policy != "" {
		p, ok := policies[*policy]
		if !ok {
			log.Fatalf("unknown -policy %q: want rr, none or reuseport", *policy)
		}
		if err := clusternet.SetSchedulingPolicy(p); err != nil {
			log.Fatal(err)
		}
	}
	primary(*workers)
}

func primary(n int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Printf("primary %d: forking %d workers, policy %v", os.Getpid(), n, clusternet.SchedulingPolicy())

	clusternet.OnOnline(func(w *clusternet.Worker) {
		log.Printf("worker %d (pid %d) online", w.ID(), w.Process().Pid)
	})
	clusternet.OnListening(func(w *clusternet.Worker, a clusternet.Address) {
		log.Printf("worker %d listening at %v", w.ID(), a)
	})
	clusternet.OnExit(func(w *clusternet.Worker, st clusternet.ExitStatus) {
		log.Printf("worker %d (pid %d) exited (%v)", w.ID(), w.Process().Pid, st)
		if w.ExitedAfterDisconnect() {
			return // it was told to leave
		}
		// It crashed or was killed: replace it, after a pause so that a
		// worker that dies at once does not make the primary spin.
		go func() {
			time.Sleep(time.Second)
			if ctx.Err() != nil {
				return // shutting down
			}
			if _, err := clusternet.Fork(); err != nil {
				log.Print(err)
			}
		}()
	})
	for range n {
		if _, err := clusternet.Fork(); err != nil {
			log.Fatal(err)
		}
	}

	<-ctx.Done()
	log.Print("shutting down")
	ws := clusternet.Workers() // Disconnect takes them out of Workers(): keep them to kill stragglers
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clusternet.Disconnect(dctx); err != nil {
		for _, w := range ws {
			w.Kill(nil)
		}
		log.Fatalf("disconnect: %v; killed the workers", err)
	}
}

func worker(addr string) {
	// Ctrl-C reaches every process of the terminal's group: leave it to the
	// primary, which disconnects the workers gracefully.
	signal.Ignore(os.Interrupt)

	id, pid := clusternet.Self().ID(), os.Getpid()
	ln, err := clusternet.Listen("tcp", addr) // instead of net.Listen
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d (pid %d)\n", id, pid)
	})}
	// ServeHTTP is srv.Serve(ln) that, when the primary disconnects this
	// worker, lets the requests already sent finish and then exits (code 0).
	log.Fatal(clusternet.ServeHTTP(srv, ln))
}
