package clusternet

import "testing"

func TestSmokeEcho(t *testing.T) {
	w := fork(t, "echo")
	got := make(chan string, 1)
	w.OnMessage(func(m Message) {
		var s string
		m.Decode(&s)
		got <- s
	})
	if err := w.Send("hello"); err != nil {
		t.Fatal(err)
	}
	if s := recv(t, got, "echo"); s != "hello" {
		t.Fatalf("got %q", s)
	}
	w.Disconnect()
	waitDone(t, w)
	t.Logf("exitedAfterDisconnect=%v state=%v", w.ExitedAfterDisconnect(), w.State())
}
