//go:build unix

package clusternet

// A worker that breaks the channel protocol: it writes to its channel
// socket directly, past the package. The primary must report an error on
// that worker, disconnect it, and go on serving the others.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	// pm-hostile does what PM_HOSTILE says when the primary sends "go",
	// and echoes every other message.
	helpers["pm-hostile"] = func() {
		self := Self()
		mode := os.Getenv("PM_HOSTILE")
		c := self.ch.t.(*unixTransport).c
		self.OnMessage(func(m Message) {
			var s string
			m.Decode(&s)
			if s != "go" {
				self.Send(s)
				return
			}
			// Everything the package queued (the online frame) is written
			// once this is: the raw writes below cannot split a frame.
			f, _ := encodeMessage(self.codec, "ready", nil)
			self.ch.sendWait(f)
			if err := pmMisbehave(c, mode); err != nil {
				self.Send("hostile: " + err.Error())
			}
			if mode == "badjson" {
				self.Send("still here")
			}
		})
		select {}
	}
}

func pmHeader(kind frameKind, bodyLen uint32, handles, reserved byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, bodyLen)
	return append(b, byte(kind), handles, reserved, 0)
}

// pmMisbehave writes what mode says directly on the channel socket.
func pmMisbehave(c *net.UnixConn, mode string) error {
	write := func(b []byte) error { _, err := c.Write(b); return err }
	withFDs := func(b []byte, n int) error {
		fds := make([]int, n)
		for i := range fds {
			fds[i] = int(os.Stderr.Fd())
		}
		_, _, err := c.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
		return err
	}
	switch mode {
	case "garbage":
		return write([]byte("\x00\x00\x00\x04\xeejunk and more junk"))
	case "reserved":
		return write(append(pmHeader(frameMessage, 1, 0, 0xab), 0))
	case "oversized":
		return write(pmHeader(frameMessage, 0x7fffffff, 0, 0))
	case "missinghandles":
		return write(append(pmHeader(frameMessage, 3, 1, 0), byte(handleFile), '1', '\n'))
	case "strayfds":
		// A well-formed message that announces no handle, with one.
		return withFDs(append(pmHeader(frameMessage, 3, 0, 0), byte(handleNone), '1', '\n'), 1)
	case "manyfds":
		// Handles by the hundred ahead of any frame, one byte at a time.
		h := pmHeader(frameMessage, 3, 0, 0)
		for i := range 4 {
			if err := withFDs(h[i:i+1], maxFrameHandles); err != nil {
				return err
			}
		}
		return nil
	case "handleonwrongframe":
		return withFDs(pmHeader(frameOnline, 0, 1, 0), 1)
	case "wrongkind":
		return write(pmHeader(frameDisconnect, 0, 0, 0))
	case "truncated":
		// Half a frame, then the channel closes.
		if err := write(append(pmHeader(frameMessage, 100, 0, 0), byte(handleNone), '"', 'a')); err != nil {
			return err
		}
		return c.Close()
	case "badjson":
		return write(append(pmHeader(frameMessage, 11, 0, 0), "\x00{not json\n"...))
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// The primary disconnects a worker that breaks the protocol, with an error
// event that says why, leaks none of the descriptors it sent, and keeps
// serving the other workers.
func TestHostileWorker(t *testing.T) {
	for _, tc := range []struct{ mode, want string }{
		{"garbage", "unknown frame kind 238"},
		{"reserved", "malformed frame header"},
		{"oversized", "exceeds the limit"},
		{"missinghandles", "announces 1 handle(s) but 0 arrived"},
		{"strayfds", "no frame announced"},
		{"manyfds", "handles"},
		{"handleonwrongframe", "carries 1 handle(s)"},
		{"wrongkind", fmt.Sprintf("may not send frames of kind %d", frameDisconnect)},
		{"truncated", "in the middle of a frame"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			good := pmFork(t, "echo")
			goodIn := messages(good)
			echo(t, good, goodIn, "before")
			fds := openFDs(t)

			bad := pmFork(t, "pm-hostile", "PM_HOSTILE="+tc.mode)
			errs := make(chan error, 8)
			bad.OnError(func(err error) { errs <- err })
			if err := bad.Send("go"); err != nil {
				t.Fatal(err)
			}
			err := recv(t, errs, "the error event")
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error event: %v; want ErrProtocol saying %q", err, tc.want)
			}
			if id := fmt.Sprintf("worker %d", bad.ID()); !strings.Contains(err.Error(), id) {
				t.Errorf("error event %q does not name %s", err, id)
			}
			evs := pmFinished(t, bad)
			if bad.IsConnected() {
				t.Errorf("the hostile worker is still connected")
			}
			if i, j := pmFind(evs, "w:error"), pmFind(evs, "w:disconnect"); i < 0 || j < i {
				t.Errorf("events %v: want the error event before disconnect", pmNames(evs))
			}
			if n := len(slices.DeleteFunc(slices.Clone(evs), func(e pmEvent) bool { return e.Name != "w:error" })); n != 1 {
				t.Errorf("%d error events, want 1", n)
			}
			// The worker sees its channel close and exits, code 0.
			if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
				t.Errorf("hostile worker: %s, want exit code 0", st)
			}
			fdsAtMost(t, fds, "primary after the hostile worker is gone")

			echo(t, good, goodIn, "after")
		})
	}
}

// A message that is not valid JSON is reported, and dropped; the framing
// is intact, so the channel stays up.
func TestHostileInvalidJSON(t *testing.T) {
	bad := pmFork(t, "pm-hostile", "PM_HOSTILE=badjson")
	in := messages(bad)
	errs := make(chan error, 8)
	bad.OnError(func(err error) { errs <- err })
	if err := bad.Send("go"); err != nil {
		t.Fatal(err)
	}
	var s string
	for s != "still here" {
		m := recv(t, in, "the worker's messages")
		if err := m.Decode(&s); err != nil {
			t.Fatalf("a message that reached the handlers does not decode: %v", err)
		}
		if s != "ready" && s != "still here" {
			t.Fatalf("unexpected message %q", s)
		}
	}
	err := recv(t, errs, "the error event")
	if !strings.Contains(err.Error(), "not valid json") || !strings.Contains(err.Error(), fmt.Sprintf("worker %d", bad.ID())) {
		t.Errorf("error event %q; want it to name the worker and say the message is not valid JSON", err)
	}
	if !bad.IsConnected() {
		t.Fatalf("the channel closed after a message that does not decode")
	}
	echo(t, bad, in, "the channel still works")
	if evs := pmEvents(t, bad, "", func([]pmEvent) bool { return true }); pmFind(evs, "w:disconnect") >= 0 {
		t.Errorf("events %v: the worker was disconnected", pmNames(evs))
	}
}
