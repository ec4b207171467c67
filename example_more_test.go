package clusternet_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/clusternet-go/clusternet"
)

// The examples below run the test binary as their workers, as ExampleFork
// does: CLUSTERNET_TEST_HELPER, given to Fork, chooses the worker's side, and
// each example's comment shows that side as a program of your own writes it.
// Their clients use loopback only, and every wait is bounded by exampleTimeout.
const exampleTimeout = 20 * time.Second

// A complete server: the primary runs the cluster, every worker serves HTTP.
//
// The same program is the primary and, started again by Run, each worker;
// main splits the roles. Run keeps one worker per CPU, re-forks those that
// die, reloads them one at a time on SIGHUP, and on SIGTERM or SIGINT
// disconnects them all and returns once they have finished. In a worker,
// Listen gets its connections from the primary, and ServeHTTP lets the
// requests in progress finish when the worker is disconnected.
func ExampleRun() {
	if clusternet.IsPrimary() {
		logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
		err := clusternet.Run(context.Background(), 0,
			clusternet.WithLogger(logger),
			clusternet.WithShutdownTimeout(20*time.Second))
		if err != nil {
			logger.Error("cluster stopped", "err", err)
			os.Exit(1)
		}
		return
	}

	ln, err := clusternet.Listen("tcp", ":8000")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from worker %d\n", clusternet.Self().ID())
	})}
	log.Fatal(clusternet.ServeHTTP(srv, ln))
}

// Workers that listen on the same address share one socket, which the
// primary binds: with port 0, they all get the same port.
//
// Each "ex-http" worker is, in a program of your own:
//
//	ln, err := clusternet.Listen("tcp", "127.0.0.1:0")
//	if err != nil {
//		log.Fatal(err)
//	}
//	log.Fatal(clusternet.ServeHTTP(&http.Server{Handler: mux}, ln))
func ExampleListen() {
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()
	defer clusternet.Disconnect(ctx) // every worker finishes and exits

	addrs := make(chan clusternet.Address, 2)
	for range 2 {
		w, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=ex-http")
		if err != nil {
			fmt.Println(err)
			return
		}
		w.OnListening(func(a clusternet.Address) { addrs <- a })
	}
	var listening []clusternet.Address
	for range 2 {
		select {
		case a := <-addrs:
			listening = append(listening, a)
		case <-ctx.Done():
			fmt.Println("timed out")
			return
		}
	}
	fmt.Println("same port:", listening[0].Port == listening[1].Port)

	client := &http.Client{Timeout: exampleTimeout}
	resp, err := client.Get("http://" + listening[0].String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("%s: %s", resp.Status, body)
	// Output:
	// same port: true
	// 200 OK: hello, world
}

// A worker that is disconnected while it serves a request answers it, then
// exits with code 0.
//
// The "ex-http" worker (see ExampleListen) serves with ServeHTTP; its handler
// for "/slow" sends the primary a message and answers 100 ms later. The
// primary disconnects the worker on that message, while the request is in
// progress. With srv.Serve and srv.Shutdown instead, requests that net/http
// reads once Shutdown has begun would be dropped.
func ExampleServeHTTP() {
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()

	w, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=ex-http")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Kill(nil) // if something went wrong: the worker has exited by then
	addrs := make(chan clusternet.Address, 1)
	exited := make(chan clusternet.ExitStatus, 1)
	w.OnListening(func(a clusternet.Address) { addrs <- a })
	w.OnMessage(func(clusternet.Message) { w.Disconnect() })
	w.OnExit(func(s clusternet.ExitStatus) { exited <- s })

	var addr clusternet.Address
	select {
	case addr = <-addrs:
	case <-ctx.Done():
		fmt.Println("timed out")
		return
	}
	client := &http.Client{Timeout: exampleTimeout}
	resp, err := client.Get("http://" + addr.String() + "/slow")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("%s: %s", resp.Status, body)

	select {
	case s := <-exited:
		fmt.Printf("the worker left: %v, after disconnect: %v\n", s, w.ExitedAfterDisconnect())
	case <-ctx.Done():
		fmt.Println("timed out")
	}
	// Output:
	// 200 OK: done
	// the worker left: exit code 0, after disconnect: true
}

// Reload replaces the workers one at a time: a replacement listens before the
// worker it replaces is disconnected, so no connection is refused meanwhile.
// Under Run, SIGHUP does the same.
//
// The "ex-http" worker (see ExampleListen) answers "/id" with its ID.
func ExampleReload() {
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()
	defer clusternet.Disconnect(ctx)

	old, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=ex-http")
	if err != nil {
		fmt.Println(err)
		return
	}
	addrs := make(chan clusternet.Address, 1)
	old.OnListening(func(a clusternet.Address) { addrs <- a })
	var url string
	select {
	case a := <-addrs:
		url = "http://" + a.String() + "/id"
	case <-ctx.Done():
		fmt.Println("timed out")
		return
	}
	client := &http.Client{Timeout: exampleTimeout}
	servedBy := func() string {
		resp, err := client.Get(url)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		id, _ := io.ReadAll(resp.Body)
		return string(id)
	}
	fmt.Println("served by the first worker:", servedBy() == strconv.Itoa(old.ID()))

	if err := clusternet.Reload(ctx); err != nil {
		fmt.Println(err)
		return
	}
	workers := clusternet.Workers()
	fmt.Println("workers:", len(workers), "the first one left after disconnect:", old.IsDead() && old.ExitedAfterDisconnect())
	fmt.Println("served by its replacement:", servedBy() == strconv.Itoa(workers[0].ID()))
	// Output:
	// served by the first worker: true
	// workers: 1 the first one left after disconnect: true
	// served by its replacement: true
}
