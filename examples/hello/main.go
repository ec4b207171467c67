// Command hello is an HTTP server that runs as a cluster: the primary keeps
// workers running, which all serve on the same address; it re-forks any
// worker that dies, reloads them without dropping a request on SIGHUP,
// upgrades the primary itself on SIGUSR2 (a new binary moved over this one
// takes over the cluster, sockets and all), and shuts down gracefully on
// SIGINT or SIGTERM.
//
//	go run ./examples/hello -workers 4 -addr :8000
//	curl localhost:8000
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
	log.Printf("primary %d: %d workers, policy %v", os.Getpid(), n, clusternet.SchedulingPolicy())
	clusternet.OnOnline(func(w *clusternet.Worker) {
		log.Printf("worker %d (pid %d) online", w.ID(), w.Process().Pid)
	})
	clusternet.OnListening(func(w *clusternet.Worker, a clusternet.Address) {
		log.Printf("worker %d listening at %v", w.ID(), a)
	})
	clusternet.OnExit(func(w *clusternet.Worker, st clusternet.ExitStatus) {
		log.Printf("worker %d (pid %d) exited (%v)", w.ID(), w.Process().Pid, st)
	})
	// Run keeps n workers: it re-forks those that die (with backoff), reloads
	// them one by one on SIGHUP, hands the cluster to a new primary started
	// from the binary on disk on SIGUSR2, and shuts down gracefully on
	// SIGINT/SIGTERM.
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
	// Ctrl-C reaches every process of the terminal's group: the worker drains
	// on it (Settings.DieOnSignal says otherwise) while the primary shuts the
	// cluster down gracefully.
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
