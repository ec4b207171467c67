package load

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		keep bool
		ok   bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 41, true, true},
		{"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nConnection: close\r\n\r\n", 57, false, true},
		{"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", 0, false, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, false, false},
	} {
		n, keep, err := ReadResponse(bufio.NewReader(strings.NewReader(tc.in)))
		if (err == nil) != tc.ok || tc.ok && (n != tc.n || keep != tc.keep) {
			t.Errorf("ReadResponse(%q) = %d, %v, %v; want %d, %v, ok %v", tc.in, n, keep, err, tc.n, tc.keep, tc.ok)
		}
	}
}

func TestLoops(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the benchmarks run on Unix")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	ctx := context.Background()

	r := KeepAlive(ctx, addr, 4, Limits{Duration: time.Minute, Max: 200})
	if r.Count != 200 || r.Errors != 0 {
		t.Errorf("KeepAlive: %+v, want 200 requests", r)
	}
	r = NewConns(ctx, addr, 4, Limits{Duration: time.Minute, Max: 50})
	if r.Count != 50 || r.Errors != 0 {
		t.Errorf("NewConns: %+v, want 50 connections", r)
	}
	start := time.Now()
	r = KeepAlive(ctx, addr, 2, Limits{Duration: 100 * time.Millisecond})
	if d := time.Since(start); d > 2*time.Second || r.Count == 0 {
		t.Errorf("KeepAlive bounded by 100ms ran %v with %d requests", d, r.Count)
	}
	l := OpenLoop(ctx, addr, 200, 16, Limits{Duration: 250 * time.Millisecond})
	if l.Done != 50 || l.Errors != 0 || l.P50 <= 0 || l.Max < l.P99 || l.P99 < l.P50 {
		t.Errorf("OpenLoop at 200/s for 250ms: %+v, want 50 requests", l)
	}
	if b, err := Sample(addr, true); err != nil || !strings.HasPrefix(string(b), "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(string(b), "\r\n\r\nok") {
		t.Errorf("Sample: %q, %v", b, err)
	}
}
