package clusternet

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
)

func init() {
	helpers["http"] = func() {
		ln, err := Listen(os.Getenv("NET"), os.Getenv("ADDR"))
		if err != nil {
			Self().Send("listen error: " + err.Error())
			select {}
		}
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%d", Self().ID())
		}))
		select {}
	}
}

func setPolicy(t *testing.T, p Policy) {
	cluster.mu.Lock()
	old := cluster.policy
	cluster.policy = p
	cluster.mu.Unlock()
	t.Cleanup(func() {
		cluster.mu.Lock()
		cluster.policy = old
		cluster.mu.Unlock()
	})
}

func TestSmokeHTTP(t *testing.T) {
	for _, p := range []Policy{SchedRR, SchedNone, SchedReusePort} {
		t.Run(p.String(), func(t *testing.T) {
			setPolicy(t, p)
			addrs := make(chan Address, 4)
			var ws []*Worker
			for i := 0; i < 3; i++ {
				w := fork(t, "http", "NET=tcp4", "ADDR=127.0.0.1:0")
				w.OnListening(func(a Address) { addrs <- a })
				w.OnMessage(func(m Message) { t.Errorf("worker: %s", m.Raw()) })
				ws = append(ws, w)
			}
			var a Address
			for range ws {
				b := recv(t, addrs, "listening")
				if a.Port != 0 && b.Port != a.Port {
					t.Errorf("ports differ: %v %v", a, b)
				}
				a = b
			}
			seen := map[string]int{}
			tr := &http.Transport{DisableKeepAlives: true}
			c := &http.Client{Transport: tr}
			for i := 0; i < 30; i++ {
				resp, err := c.Get("http://" + a.String())
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				seen[string(b)]++
			}
			t.Logf("%v: %v", a, seen)
			for _, w := range ws {
				w.Disconnect()
			}
			for _, w := range ws {
				waitDone(t, w)
			}
		})
	}
}
