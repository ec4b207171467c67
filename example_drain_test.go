package clusternet_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"

	"github.com/clusternet-go/clusternet"
)

// A worker whose connections outlive a request ends them itself when it
// drains: here a stream of server-sent events gets a last event that tells
// the client to reconnect (to a worker that stays), and the worker exits as
// soon as the stream is over, instead of being killed at Run's shutdown
// timeout. A WebSocket server sends a close frame with status 1001, going
// away (examples/websocket in the repository).
//
// The "ex-stream" worker is, in a program of your own:
//
//	ln, err := clusternet.Listen("tcp", "127.0.0.1:0")
//	if err != nil {
//		log.Fatal(err)
//	}
//	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//		w.Header().Set("Content-Type", "text/event-stream")
//		fmt.Fprint(w, "data: hello\n\n")
//		w.(http.Flusher).Flush()
//		select {
//		case <-clusternet.Draining(): // the worker is leaving: end the stream
//			fmt.Fprint(w, "event: bye\ndata: reconnect\n\n")
//		case <-r.Context().Done(): // the client left
//		}
//	})}
//	log.Fatal(clusternet.ServeHTTP(srv, ln))
func ExampleDraining() {
	ctx, cancel := context.WithTimeout(context.Background(), exampleTimeout)
	defer cancel()
	fmt.Println("in the primary, Draining is nil:", clusternet.Draining() == nil)

	w, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=ex-stream")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Kill(nil) // if something went wrong: the worker has exited by then
	addrs := make(chan clusternet.Address, 1)
	exited := make(chan clusternet.ExitStatus, 1)
	w.OnListening(func(a clusternet.Address) { addrs <- a })
	w.OnExit(func(s clusternet.ExitStatus) { exited <- s })
	var addr clusternet.Address
	select {
	case addr = <-addrs:
	case <-ctx.Done():
		fmt.Println("timed out")
		return
	}

	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr.String()+"/", nil)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	for events.Scan() {
		if events.Text() == "" {
			continue
		}
		fmt.Println(events.Text())
		if events.Text() == "data: hello" {
			w.Disconnect() // as a reload or a shutdown does
		}
	}
	fmt.Println("end of the stream:", events.Err())

	select {
	case s := <-exited:
		fmt.Println("the worker left:", s)
	case <-ctx.Done():
		fmt.Println("timed out")
	}
	// Output:
	// in the primary, Draining is nil: true
	// data: hello
	// event: bye
	// data: reconnect
	// end of the stream: <nil>
	// the worker left: exit code 0
}
