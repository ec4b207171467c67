//go:build unix

package clusternet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func init() {
	// fleet runs a supervised cluster serving ADDR, logging to stdout; SIGHUP
	// reloads it and SIGTERM stops it, as Run does by default.
	primaries["fleet"] = func() {
		SetupPrimary(Settings{Env: []string{envHelper + "=sup-http", "ADDR=" + os.Getenv("ADDR")}})
		log := slog.New(slog.NewTextHandler(os.Stdout, nil))
		if err := Run(context.Background(), 2, WithLogger(log), WithShutdownTimeout(5*time.Second)); err != nil {
			fmt.Println("run:", err)
			os.Exit(1)
		}
	}
}

func waitServing(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(testTimeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not serve: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFleetBehindNginx runs Debian's nginx on loopback in front of two
// primaries and reloads one of them under load: no request may fail.
func TestFleetBehindNginx(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, serr := os.Stat(p); serr == nil {
				nginx, err = p, nil
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx is not installed; .ci/run installs it")
		}
		t.Skip("nginx is not installed (apt-get install nginx-light)")
	}
	a, b, front := freePort(t), freePort(t), freePort(t)
	pa := startPrimary(t, "fleet", "ADDR="+a)
	startPrimary(t, "fleet", "ADDR="+b)
	waitServing(t, "http://"+a)
	waitServing(t, "http://"+b)

	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream fleet { server %[2]s; server %[3]s; }
	server {
		listen %[4]s;
		location / {
			proxy_pass http://fleet;
			# A failure must show, not be retried on the other primary.
			proxy_next_upstream off;
		}
	}
}
`, dir, a, b, front)), 0o644)
	ngx := exec.Command(nginx, "-p", dir, "-c", conf, "-e", "stderr")
	ngx.Stderr = os.Stderr
	if err := ngx.Start(); err != nil {
		t.Fatal(err)
	}
	ngxDone := make(chan error, 1)
	go func() { ngxDone <- ngx.Wait() }()
	t.Cleanup(func() {
		ngx.Process.Signal(syscall.SIGTERM)
		select {
		case <-ngxDone:
		case <-time.After(testTimeout):
			ngx.Process.Kill()
			<-ngxDone
		}
	})
	waitServing(t, "http://"+front)

	var served, failed atomic.Int64
	stop := make(chan struct{})
	var load sync.WaitGroup
	for range 4 {
		load.Add(1)
		go func() {
			defer load.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for i := 0; i < 50000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://" + front + "/")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					t.Logf("request failed: %v", err)
				} else {
					served.Add(1)
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // load before the reload, not a timing assertion
	start := time.Now()
	const reloads = 3
	for range reloads {
		pa.cmd.Process.Signal(syscall.SIGHUP)
		pa.waitLine(t, "msg=reloaded")
	}
	took := time.Since(start)
	time.Sleep(100 * time.Millisecond) // and load after it
	close(stop)
	load.Wait()
	t.Logf("%d reloads of one primary behind nginx took %v: %d requests served, %d failed", reloads, took.Round(time.Millisecond), served.Load(), failed.Load())
	if failed.Load() != 0 || served.Load() == 0 {
		t.Fatalf("%d requests failed, %d served", failed.Load(), served.Load())
	}
}
