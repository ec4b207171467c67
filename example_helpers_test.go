package clusternet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// The workers of the examples in example_more_test.go and
// example_more_unix_test.go. Each is what the worker side of main would be in
// a program of your own; the examples' comments show it.
func init() {
	// ex-http serves HTTP on a loopback port, as a worker should: Listen,
	// then ServeHTTP. "/" says hello, "/id" answers the worker's ID, and
	// "/slow" tells the primary that it started, then answers 100 ms later.
	helpers["ex-http"] = func() {
		ln, err := Listen("tcp", "127.0.0.1:0")
		if err != nil {
			exHelperFailed(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello, world")
		})
		mux.HandleFunc("/id", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, strconv.Itoa(Self().ID()))
		})
		mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			Self().Send("slow request started")
			time.Sleep(100 * time.Millisecond)
			fmt.Fprintln(w, "done")
		})
		exHelperFailed(ServeHTTP(&http.Server{Handler: mux}, ln))
	}

	// ex-udp answers every datagram on a loopback port with its upper case.
	helpers["ex-udp"] = func() {
		pc, err := ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			exHelperFailed(err)
		}
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				select {} // disconnected: the package ends the process
			}
			if err != nil {
				exHelperFailed(err)
			}
			pc.WriteTo(bytes.ToUpper(buf[:n]), from)
		}
	}
}

// exHelperFailed ends an example's worker that could not serve.
func exHelperFailed(err error) {
	fmt.Fprintf(os.Stderr, "example worker %d: %v\n", Self().ID(), err)
	os.Exit(1)
}
