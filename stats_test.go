package clusternet

import (
	"encoding/json"
	"expvar"
	"net/http"
	"testing"
)

func TestStats(t *testing.T) {
	require(t, "rr")
	setPolicy(t, SchedRR)
	addr := freePort(t)
	w := fork(t, "sup-http", "ADDR="+addr)
	got := make(chan Message, 1)
	w.OnMessage(func(m Message) { got <- m })
	for len(w.listenedAddresses()) == 0 {
		_, note := w.listensOn(nil)
		if len(w.listenedAddresses()) == 0 {
			recv(t, note, "the worker to listen")
		}
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	const requests = 5
	for range requests {
		if _, err := get(c, "http://"+addr); err != nil {
			t.Fatal(err)
		}
	}
	w.Send("ping")
	st := w.Stats()
	if st.ID != w.ID() || st.Handed < requests || st.Accepted != st.Handed-uint64(st.InFlight) || st.MessagesOut != 1 {
		t.Fatalf("worker stats %+v after %d requests and one message", st, requests)
	}
	cs := Stats()
	var mine *WorkerStats
	for i := range cs.PerWorker {
		if cs.PerWorker[i].ID == w.ID() {
			mine = &cs.PerWorker[i]
		}
	}
	if mine == nil || cs.Workers < 1 || cs.Forks < w.ID() || cs.Servers < 1 {
		t.Fatalf("cluster stats %+v do not show worker %d", cs, w.ID())
	}
	PublishExpvar()
	PublishExpvar() // twice is harmless
	var published ClusterStats
	if err := json.Unmarshal([]byte(expvar.Get("clusternet").String()), &published); err != nil {
		t.Fatalf("expvar: %v", err)
	}
	if published.Forks < w.ID() {
		t.Fatalf("expvar published %+v", published)
	}
}
