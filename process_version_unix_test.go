//go:build unix

package clusternet

// A worker built from another clusternet release: refused, with an error
// that names both protocol versions, and never misread.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestWorkerOfAnotherVersionIsRefused(t *testing.T) {
	for _, v := range []uint32{0, protocolVersion + 1} {
		t.Run(fmt.Sprint("version ", v), func(t *testing.T) {
			withSettings(t, Settings{Silent: true})
			// rel-serve would listen, send and answer if it were heard.
			w := fork(t, "rel-serve", "REL_ADDR="+freePort(t), fmt.Sprintf("%s=%d", envSpeakVersion, v))
			errs := make(chan error, 4)
			w.OnError(func(err error) { errs <- err })
			online := make(chan struct{}, 1)
			w.OnOnline(func() { online <- struct{}{} })
			err := recv(t, errs, "the refusal")
			if !errors.Is(err, ErrVersion) {
				t.Fatalf("error event %v, want ErrVersion", err)
			}
			want := fmt.Sprintf("speaks protocol version %d, this primary speaks version %d", v, protocolVersion)
			if v == 0 {
				want = fmt.Sprintf("speaks protocol version 0 (a clusternet release older than versioned handshakes), this primary speaks version %d", protocolVersion)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error event %q, want it to say %q", err, want)
			}
			waitDone(t, w)
			if st := w.exitStatus(); st.Code != 1 {
				t.Errorf("the refused worker exited with %v, want code 1", st)
			}
			stderr, _ := io.ReadAll(w.Stderr())
			if !strings.Contains(string(stderr), "the primary refused this worker: "+ErrVersion.Error()) {
				t.Errorf("the refused worker's stderr: %q", stderr)
			}
			select {
			case <-online:
				t.Error("a refused worker had an online event")
			default:
			}
			if len(w.listenedAddresses()) != 0 || w.State() == StateListening {
				t.Error("the primary heard a refused worker listen")
			}
		})
	}
}

// TestFramesBeforeOnline: a worker's first frame must be its online report,
// which carries its version; anything else first is a protocol error, so
// that nothing is read before the versions are known to match.
func TestFramesBeforeOnline(t *testing.T) {
	listen, _ := json.Marshal(listenRequest{Network: "tcp", Address: "127.0.0.1:0"})
	tr := &fuzzTransport{data: fuzzFrame(frameListen, 0, listen)}
	w := fuzzWorker(tr, JSON)
	w.online = false
	err := w.readFrames()
	w.ch.abort(ErrChannelClosed)
	<-w.ch.done
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "before the online report") {
		t.Fatalf("a listen before online: %v, want a protocol error", err)
	}
	if n := len(w.subscriptions(false)); n != 0 {
		t.Fatalf("the listen before online was answered: %d subscriptions", n)
	}
}
