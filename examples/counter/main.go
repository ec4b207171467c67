// Command counter is the request-counting example of Node's cluster
// documentation: every worker tells the primary about each request it serves,
// and the primary prints the count every second.
//
//	go run ./examples/counter -workers 4 -addr :8000
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusternet-go/clusternet"
)

// notice is the message a worker sends per request: {"cmd":"notifyRequest"}.
type notice struct {
	Cmd string `json:"cmd"`
}

func main() {
	workers := flag.Int("workers", runtime.NumCPU(), "number of workers")
	addr := flag.String("addr", ":8000", "address to listen on")
	flag.Parse()
	if clusternet.IsWorker() {
		worker(*addr)
		return
	}
	primary(*workers)
}

func primary(n int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Keep track of HTTP requests.
	var numReqs atomic.Int64
	go func() {
		for range time.Tick(time.Second) {
			fmt.Printf("numReqs = %d\n", numReqs.Load())
		}
	}()

	// Count requests: the messages of every worker come here.
	clusternet.OnMessage(func(w *clusternet.Worker, m clusternet.Message) {
		var msg notice
		if m.Decode(&msg) == nil && msg.Cmd == "notifyRequest" {
			numReqs.Add(1)
		}
	})

	for range n {
		if _, err := clusternet.Fork(); err != nil {
			log.Fatal(err)
		}
	}

	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clusternet.Disconnect(dctx); err != nil {
		log.Fatalf("disconnect: %v", err)
	}
}

func worker(addr string) {
	ln, err := clusternet.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello world\n")
		// Notify the primary about the request.
		if err := clusternet.Self().Send(notice{Cmd: "notifyRequest"}); err != nil {
			log.Print(err)
		}
	})}
	log.Fatal(clusternet.ServeHTTP(srv, ln)) // exits (code 0) when disconnected
}
