package clusternet

// ServeHTTP's hold on srv.ConnState: the user's hook is called for every
// state, and given back once ServeHTTP has returned and its connections are
// closed.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func init() {
	// http-connstate serves one request with ServeHTTP on a listener of its
	// own, which it then closes (no drain), and reports what srv.ConnState
	// is while the keep-alive connection is open and once it is closed.
	helpers["http-connstate"] = func() {
		ln, err := Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			exHelperFailed(err)
		}
		// The hook reads srv.ConnState itself: net/http calls it on the
		// goroutine that gives the hook back, so the reads are ordered.
		var srv *http.Server
		var hook func(net.Conn, http.ConnState)
		seen := map[http.ConnState]int{}
		report := make(chan string, 8)
		hook = func(c net.Conn, st http.ConnState) {
			seen[st]++ // one connection: its states come one at a time
			users := reflect.ValueOf(srv.ConnState).Pointer() == reflect.ValueOf(hook).Pointer()
			report <- fmt.Sprintf("%v %d: the user's hook in place: %v", st, seen[st], users)
		}
		srv = &http.Server{ConnState: hook, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "ok")
		})}
		served := make(chan error, 1)
		go func() { served <- ServeHTTP(srv, ln) }()
		client := &http.Client{Transport: &http.Transport{}}
		get := func() {
			resp, err := client.Get("http://" + ln.Addr().String() + "/")
			if err != nil {
				exHelperFailed(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		get()
		ln.Close()
		Self().Send(fmt.Sprintf("ServeHTTP returned %v", <-served))
		get() // on the connection still open
		client.CloseIdleConnections()
		for s := range report {
			Self().Send(s)
		}
	}
}

func TestServeHTTPConnState(t *testing.T) {
	w := fork(t, "http-connstate")
	in := messages(w)
	for _, want := range []string{
		"ServeHTTP returned accept tcp",
		"new 1: the user's hook in place: false",
		"active 1: the user's hook in place: false",
		"idle 1: the user's hook in place: false",
		"active 2: the user's hook in place: false", // after ServeHTTP returned
		"idle 2: the user's hook in place: false",
		"closed 1: the user's hook in place: true",
	} {
		if got := recvString(t, in, w); !strings.HasPrefix(got, want) {
			t.Errorf("worker said %q\nwant %q", got, want)
		}
	}
}
