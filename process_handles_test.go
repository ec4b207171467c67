package clusternet

// Handles sent with messages: refused, taken once, with a large message,
// many in flight both ways.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pmBig is the 1 MiB message.
type pmBig struct {
	Data []byte
	Sum  string
}

// pmHandleReport is what "pm-handleinfo" says about a message's handle.
type pmHandleReport struct {
	FirstErr      string // the first Conn (or File, for files): "" when it worked
	SecondInvalid bool   // the second take failed with ErrInvalidHandle
	FileAfterNil  bool   // File after the take returned nil
	HasAfter      bool   // HasHandle after the take
	WrongKind     bool   // Listener() on a connection failed with ErrInvalidHandle
	NoneInvalid   bool   // a message without a handle: Conn fails with ErrInvalidHandle
}

func init() {
	// pm-bighandle answers a pmBig that comes with a file: it writes what
	// it received into the file and sends the data back with the file.
	helpers["pm-bighandle"] = func() {
		Self().OnMessage(func(m Message) {
			var b pmBig
			if err := m.Decode(&b); err != nil {
				Self().Send(pmBig{Sum: "decode error: " + err.Error()})
				return
			}
			f := m.File()
			if f == nil {
				Self().Send(pmBig{Sum: "no handle"})
				return
			}
			sum := sha256.Sum256(b.Data)
			fmt.Fprintf(f, "worker got %d bytes %s\n", len(b.Data), hex.EncodeToString(sum[:]))
			if err := Self().Send(pmBig{Data: b.Data, Sum: hex.EncodeToString(sum[:])}, WithHandle(f)); err != nil {
				Self().Send(pmBig{Sum: "send error: " + err.Error()})
			}
			f.Close()
		})
		select {}
	}

	// pm-handleinfo takes the handle of every message and reports on it; a
	// connection gets a greeting written to it first.
	helpers["pm-handleinfo"] = func() {
		Self().OnMessage(func(m Message) {
			var kind string
			m.Decode(&kind)
			var r pmHandleReport
			switch kind {
			case "conn":
				_, werr := m.Listener()
				r.WrongKind = errors.Is(werr, ErrInvalidHandle)
				c, err := m.Conn()
				if err != nil {
					r.FirstErr = err.Error()
				} else {
					io.WriteString(c, "hello over the handed connection")
					c.Close()
				}
				_, err = m.Conn()
				r.SecondInvalid = errors.Is(err, ErrInvalidHandle)
			case "file":
				_, werr := m.Conn()
				r.WrongKind = errors.Is(werr, ErrInvalidHandle)
				f := m.File()
				if f == nil {
					r.FirstErr = "File returned nil"
				} else {
					io.WriteString(f, "hello through the handed file")
					f.Close()
				}
				_, err := m.Conn()
				r.SecondInvalid = errors.Is(err, ErrInvalidHandle)
			case "none":
				_, err := m.Conn()
				r.NoneInvalid = errors.Is(err, ErrInvalidHandle)
			}
			r.FileAfterNil = m.File() == nil
			r.HasAfter = m.HasHandle()
			Self().Send(r)
		})
		select {}
	}
}

// Handles that cannot be sent are refused with ErrInvalidHandle; the
// channel stays usable.
func TestProcessInvalidHandle(t *testing.T) {
	w := fork(t, "echo")
	in := messages(w)
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	c1, c2 := net.Pipe() // no descriptor behind it
	defer c1.Close()
	defer c2.Close()
	for _, h := range []any{42, "a string", c1, closed, (*os.File)(nil), &bytes.Buffer{}} {
		if err := w.Send("with a bad handle", WithHandle(h)); !errors.Is(err, ErrInvalidHandle) {
			t.Errorf("Send(WithHandle(%T)) = %v, want ErrInvalidHandle", h, err)
		}
	}
	if err := w.Send(make(chan int)); err == nil || errors.Is(err, ErrChannelClosed) {
		t.Errorf("Send of a value JSON cannot encode = %v, want an encoding error", err)
	}
	echo(t, w, in, "still fine")
}

// A message's handle is taken once, by the kind it is; Message without a
// handle has none to take. Checked on the worker's side for a connection
// and a file sent by the primary, and on the primary's side for a file
// sent by the worker.
func TestProcessHandleTakenOnce(t *testing.T) {
	w := fork(t, "pm-handleinfo")
	in := messages(w)

	// A connection: the worker writes to it, then closes it.
	_, client, server := loopbackConn(t, "tcp")
	defer server.Close()
	var r pmHandleReport
	if err := w.Send("conn", WithHandle(server)); err != nil {
		t.Fatal(err)
	}
	m := recv(t, in, "the worker's report")
	if err := m.Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r != (pmHandleReport{SecondInvalid: true, FileAfterNil: true, WrongKind: true}) {
		t.Errorf("connection handle, worker's report: %+v", r)
	}
	client.SetReadDeadline(time.Now().Add(testTimeout))
	got, err := io.ReadAll(client)
	if string(got) != "hello over the handed connection" || err != nil {
		t.Errorf("read from the handed connection: %q, %v", got, err)
	}

	// A file.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if err := w.Send("file", WithHandle(pw)); err != nil {
		t.Fatal(err)
	}
	pw.Close() // files stay open on the sender's side: close ours
	m = recv(t, in, "the worker's report")
	r = pmHandleReport{}
	if err := m.Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r != (pmHandleReport{SecondInvalid: true, FileAfterNil: true, WrongKind: true}) {
		t.Errorf("file handle, worker's report: %+v", r)
	}
	if got := pmReadAll(t, pr); got != "hello through the handed file" {
		t.Errorf("read from the handed file: %q", got)
	}

	// No handle.
	if err := w.Send("none"); err != nil {
		t.Fatal(err)
	}
	m = recv(t, in, "the worker's report")
	r = pmHandleReport{}
	m.Decode(&r)
	if r != (pmHandleReport{NoneInvalid: true, FileAfterNil: true}) {
		t.Errorf("no handle, worker's report: %+v", r)
	}
	if m.HasHandle() || m.File() != nil {
		t.Errorf("a message without a handle: HasHandle() = %v, File() = non-nil", m.HasHandle())
	}
	if _, err := m.Conn(); !errors.Is(err, ErrInvalidHandle) {
		t.Errorf("Conn() of a message without a handle = %v, want ErrInvalidHandle", err)
	}
}

// Both sides of a message with a handle: the first handler to take it
// gets it, every other handler sees it taken.
func TestProcessHandleTakenOnceAcrossHandlers(t *testing.T) {
	w := fork(t, "pm-bighandle")
	var mine atomic.Pointer[Worker]
	mine.Store(w)
	type took struct {
		who  string
		file *os.File
		has  bool
	}
	tooks := make(chan took, 4)
	w.OnMessage(func(m Message) {
		has := m.HasHandle()
		tooks <- took{"worker", m.File(), has}
	})
	OnMessage(func(from *Worker, m Message) {
		if from != mine.Load() {
			return
		}
		has := m.HasHandle()
		select {
		case tooks <- took{"primary-wide", m.File(), has}:
		default:
		}
	})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	err = w.Send(pmBig{Data: []byte("small")}, WithHandle(pw))
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	first := recv(t, tooks, "the worker's handler")
	second := recv(t, tooks, "the primary-wide handler")
	if first.who != "worker" || first.file == nil || !first.has {
		t.Errorf("first handler: %s, took a file: %v, HasHandle: %v", first.who, first.file != nil, first.has)
	}
	if second.who != "primary-wide" || second.file != nil || second.has {
		t.Errorf("second handler: %s, took a file: %v, HasHandle: %v", second.who, second.file != nil, second.has)
	}
	if first.file != nil {
		first.file.Close()
	}
}

// A message of 1 MiB with a handle, both ways.
func TestProcessBigMessageWithHandle(t *testing.T) {
	w := fork(t, "pm-bighandle")
	in := make(chan Message, 1)
	files := make(chan *os.File, 1)
	w.OnMessage(func(m Message) {
		files <- m.File() // taken here: unclaimed handles close when handlers return
		in <- m
	})
	data := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(data)
	sum := sha256.Sum256(data)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	err = w.Send(pmBig{Data: data}, WithHandle(pw))
	pw.Close()
	if err != nil {
		t.Fatalf("Send of 1 MiB with a handle: %v", err)
	}
	f := recv(t, files, "the reply")
	m := recv(t, in, "the reply")
	var back pmBig
	if err := m.Decode(&back); err != nil {
		t.Fatal(err)
	}
	if back.Sum != hex.EncodeToString(sum[:]) || !bytes.Equal(back.Data, data) {
		t.Fatalf("reply: %d bytes, sum %q; want the 1 MiB sent back", len(back.Data), back.Sum)
	}
	if f == nil {
		t.Fatal("the reply came without its handle")
	}
	// The worker sent the pipe back: the primary now holds the only
	// writer, so closing it ends the pipe.
	io.WriteString(f, "and back\n")
	f.Close()
	want := fmt.Sprintf("worker got %d bytes %x\nand back\n", len(data), sum)
	if got := pmReadAll(t, pr); got != want {
		t.Errorf("pipe: %q, want %q", got, want)
	}
}

// pm-storm and the test below: many messages with handles in flight in
// both directions at once.
const pmStormN = 1000

type pmStorm struct {
	Seq     int
	Padding string
}

func init() {
	helpers["pm-storm"] = func() {
		self := Self()
		var got atomic.Int64
		r, w, err := os.Pipe()
		if err != nil {
			os.Exit(8)
		}
		defer w.Close()
		self.OnMessage(func(m Message) {
			var s pmStorm
			m.Decode(&s)
			if s.Seq < 0 { // the start signal
				go func() {
					for i := range pmStormN {
						if err := self.Send(pmStorm{Seq: i, Padding: s.Padding}, WithHandle(r)); err != nil {
							self.Send(pmStorm{Seq: -2, Padding: err.Error()})
							return
						}
					}
				}()
				return
			}
			if f := m.File(); f != nil {
				f.Close()
				if got.Add(1) == pmStormN {
					self.Send(pmStorm{Seq: -3})
				}
			}
		})
		select {}
	}
}

func TestProcessHandlesBothWays(t *testing.T) {
	w := fork(t, "pm-storm")
	var got atomic.Int64
	all := make(chan struct{})
	workerDone := make(chan pmStorm, 2)
	w.OnMessage(func(m Message) {
		var s pmStorm
		m.Decode(&s)
		if s.Seq < 0 {
			workerDone <- s
			return
		}
		if f := m.File(); f != nil {
			f.Close()
			if got.Add(1) == pmStormN {
				close(all)
			}
		}
	})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	padding := strings.Repeat("p", 8<<10) // fills the socket buffers both ways
	if err := w.Send(pmStorm{Seq: -1, Padding: padding}); err != nil {
		t.Fatal(err)
	}
	for i := range pmStormN {
		if err := w.Send(pmStorm{Seq: i, Padding: padding}, WithHandle(pr)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	recv(t, all, fmt.Sprintf("the worker's %d handles", pmStormN))
	if s := recv(t, workerDone, "the worker to receive the primary's handles"); s.Seq != -3 {
		t.Fatalf("worker: %s", s.Padding)
	}
}
