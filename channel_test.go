package clusternet

import (
	"strings"
	"testing"
)

// Message frames are written from pooled buffers, which go back to the pool
// once written: many frames queued at once, large and small, arrive intact.
func TestChannelPooledFrames(t *testing.T) {
	a, fd, err := channelPair()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := inheritedChannel(uint64(fd))
	if err != nil {
		t.Fatal(err)
	}
	ch := newChannel(a, DefaultMaxMessageSize)
	fr := newFrameReader(peer, DefaultMaxMessageSize)
	defer fr.close()
	payload := func(i int) benchPayload {
		size := i
		if i%3 == 0 {
			size = readBufSize + i // read on its own
		}
		return benchPayload{Action: "p", PowerLevel: i, Data: strings.Repeat(string(rune('a'+i%26)), size)}
	}
	const n = 300
	go func() {
		for i := range n {
			codec := Serialization(i % 2)
			f, err := encodeMessage(codec, payload(i), nil)
			if err == nil {
				err = ch.send(f)
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
		ch.shutdown()
	}()
	w := &Worker{}
	for i := range n {
		f, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		w.codec = Serialization(i % 2)
		body := f.body[1:]
		gd, err := w.checkMessage(body)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		var got benchPayload
		if err := (Message{data: body, codec: w.codec, gob: gd}).Decode(&got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := payload(i); got != want {
			t.Fatalf("frame %d: got %q, %d bytes of data; want %q, %d", i, got.Action, len(got.Data), want.Action, len(want.Data))
		}
		if owned := len(f.body) > readBufSize; f.owned != owned {
			t.Errorf("frame %d of %d bytes: owned %v", i, len(f.body), f.owned)
		}
	}
	<-ch.done
}
