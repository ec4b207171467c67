//go:build windows

package clusternet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// The Windows counterparts of the Unix-only machinery, end to end: the pipe
// channel with handles in its byte stream, sockets and files crossing it
// both ways, shared listening sockets, and the job object.

// hear registers the worker's message handler and then tells the primary,
// which waits for that before it sends: a message that arrives before the
// handler is registered has nobody to hear it.
func hear(fn func(Message)) {
	Self().OnMessage(fn)
	Self().Send("ready")
	select {}
}

// ready returns notes(w) once w's handler is registered.
func ready(t *testing.T, w *Worker) <-chan note {
	t.Helper()
	got := notes(w)
	if s := recv(t, got, "the worker to be ready").text; s != "ready" {
		t.Fatalf("worker: %s", s)
	}
	return got
}

func init() {
	helpers["win-exit3"] = func() { os.Exit(3) }

	helpers["win-echo"] = func() {
		hear(func(m Message) {
			var v any
			m.Decode(&v)
			Self().Send(v)
		})
	}

	// win-file reads the file it is sent, appends to it, and sends back the
	// read end of a pipe holding what it read.
	helpers["win-file"] = func() {
		hear(func(m Message) {
			f := m.File()
			if f == nil {
				Self().Send("no file")
				return
			}
			b, err := io.ReadAll(f)
			if err == nil {
				_, err = f.WriteString(" +worker")
			}
			f.Close()
			if err != nil {
				Self().Send(err.Error())
				return
			}
			r, w, err := os.Pipe()
			if err != nil {
				Self().Send(err.Error())
				return
			}
			w.WriteString("worker read " + string(b))
			w.Close()
			Self().Send("file", WithHandle(r))
			r.Close()
		})
	}

	// win-conn greets on the connection it is sent and echoes one line in
	// upper case.
	helpers["win-conn"] = func() {
		hear(func(m Message) {
			c, err := m.Conn()
			if err != nil {
				Self().Send(err.Error())
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "worker %d\n", Self().ID())
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					Self().Send(err.Error())
					return
				}
				io.WriteString(c, strings.ToUpper(line))
			}()
		})
	}

	// win-dial sends the primary a connection it dialed.
	helpers["win-dial"] = func() {
		c, err := net.Dial("tcp", os.Getenv("WIN_ADDR"))
		if err != nil {
			Self().Send(err.Error())
		} else {
			Self().Send("conn", WithHandle(c))
		}
		select {}
	}

	// win-udp checks a read deadline on the datagram socket it is sent,
	// then echoes one datagram.
	helpers["win-udp"] = func() {
		hear(func(m Message) {
			pc, err := m.PacketConn()
			if err != nil {
				Self().Send(err.Error())
				return
			}
			go func() {
				defer pc.Close()
				buf := make([]byte, 100)
				pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				var ne net.Error
				if _, _, err := pc.ReadFrom(buf); !errors.As(err, &ne) || !ne.Timeout() {
					Self().Send(fmt.Sprintf("ReadFrom before the deadline: got %v, want a timeout", err))
					return
				}
				pc.SetReadDeadline(time.Time{})
				Self().Send("ready")
				n, from, err := pc.ReadFrom(buf)
				if err == nil {
					_, err = pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
				}
				if err != nil {
					Self().Send(err.Error())
				}
			}()
		})
	}

	// win-extra writes to the file it inherited at the handle in WIN_EXTRA.
	helpers["win-extra"] = func() {
		h, err := strconv.ParseUint(os.Getenv("WIN_EXTRA"), 10, 64)
		if err == nil {
			f := os.NewFile(uintptr(h), "extra")
			_, err = f.WriteString("through ExtraFiles")
			f.Close()
		}
		if err != nil {
			Self().Send(err.Error())
		} else {
			Self().Send("written")
		}
		select {}
	}

	// win-http serves HTTP on the cluster's listener for WIN_ADDR, answering
	// with its worker id.
	helpers["win-http"] = func() {
		ln, err := Listen("tcp", os.Getenv("WIN_ADDR"))
		if err != nil {
			Self().Send("listen: " + err.Error())
			select {}
		}
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, Self().ID())
		}))
		select {} // the listener closed: Disconnect finishes and exits
	}
}

// note is a message from a worker: a string, maybe with a handle.
type note struct {
	text string
	conn net.Conn // a connection that came with it
	file *os.File // any other handle
}

// notes returns a channel that gets w's messages, taking their handles
// before they are closed with the handler's return.
func notes(w *Worker) <-chan note {
	ch := make(chan note, 16)
	w.OnMessage(func(m Message) {
		var n note
		if err := m.Decode(&n.text); err != nil {
			n.text = err.Error()
		}
		if c, err := m.Conn(); err == nil {
			n.conn = c
		} else {
			n.file = m.File()
		}
		ch <- n
	})
	return ch
}

func TestWindowsMessages(t *testing.T) {
	w := fork(t, "win-echo")
	got := ready(t, w)
	big := strings.Repeat("x", 3*pipeBufSize+17)
	for _, s := range []string{"hello", big, "after the big one"} {
		if err := w.Send(s); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if r := recv(t, got, "the echo").text; r != s {
			t.Fatalf("echo of a %d-byte message: got %d bytes", len(s), len(r))
		}
	}
}

func TestWindowsFileHandle(t *testing.T) {
	// Not t.TempDir: Wine 8 cannot remove a directory tree the way os.RemoveAll does.
	f, err := os.CreateTemp("", "clusternet-test-")
	if err != nil {
		t.Fatal(err)
	}
	path := f.Name()
	t.Cleanup(func() { os.Remove(path) }) // after the worker is gone
	defer f.Close()
	f.WriteString("primary data")
	f.Seek(0, io.SeekStart)

	w := fork(t, "win-file")
	got := ready(t, w)
	if err := w.Send("file", WithHandle(f)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := recv(t, got, "the worker's file")
	back := m.file
	if back == nil {
		t.Fatalf("the worker sent %q without a file", m.text)
	}
	defer back.Close()
	b, err := io.ReadAll(back)
	if err != nil || string(b) != "worker read primary data" {
		t.Errorf("read %q, %v from the worker's pipe; want %q", b, err, "worker read primary data")
	}
	// The worker's handle shares the file with ours: same data, same position.
	if b, err := os.ReadFile(path); err != nil || string(b) != "primary data +worker" {
		t.Errorf("file holds %q, %v; want %q", b, err, "primary data +worker")
	}
}

func TestWindowsConnHandle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	t.Run("to worker", func(t *testing.T) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		client.SetDeadline(time.Now().Add(testTimeout))
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		w := fork(t, "win-conn")
		got := ready(t, w)
		// Without KeepOpen the primary's copy closes once sent, so the
		// client sees end of file when the worker closes its own.
		if err := w.Send("conn", WithHandle(c)); err != nil {
			t.Fatalf("Send: %v", err)
		}
		r := bufio.NewReader(client)
		want := fmt.Sprintf("worker %d\n", w.ID())
		if line, err := r.ReadString('\n'); line != want {
			t.Fatalf("greeting %q, %v; want %q (worker said %q)", line, err, want, drain(got))
		}
		io.WriteString(client, "ping\n")
		if line, err := r.ReadString('\n'); line != "PING\n" {
			t.Errorf("echo %q, %v; want %q", line, err, "PING\n")
		}
		if n, err := r.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("after the worker closed: read %d bytes, %v; want EOF", n, err)
		}
	})

	t.Run("from worker", func(t *testing.T) {
		w := fork(t, "win-dial", "WIN_ADDR="+ln.Addr().String())
		got := notes(w)
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		server.SetDeadline(time.Now().Add(testTimeout))
		m := recv(t, got, "the worker's connection")
		c := m.conn
		if c == nil {
			t.Fatalf("the worker sent %q without a connection", m.text)
		}
		io.WriteString(c, "from the primary\n")
		c.Close()
		if b, err := io.ReadAll(server); string(b) != "from the primary\n" || err != nil {
			t.Errorf("read %q, %v; want %q", b, err, "from the primary\n")
		}
	})
}

// drain returns the messages waiting in ch, for failure reports.
func drain(ch <-chan note) []string {
	var s []string
	for {
		select {
		case n := <-ch:
			s = append(s, n.text)
		default:
			return s
		}
	}
}

func TestWindowsPacketConnHandle(t *testing.T) {
	// Raw sockets: Go's own UDP sockets do not work under Wine.
	s, err := windows.Socket(windows.AF_INET, windows.SOCK_DGRAM, windows.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	if err := windows.Bind(s, &windows.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		windows.Closesocket(s)
		t.Fatal(err)
	}
	pc, err := newPollPacketConn(s)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	client, err := windows.Socket(windows.AF_INET, windows.SOCK_DGRAM, windows.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	defer windows.Closesocket(client)
	windows.SetsockoptInt(client, windows.SOL_SOCKET, windows.SO_RCVTIMEO, int(testTimeout/time.Millisecond))

	w := fork(t, "win-udp")
	got := ready(t, w)
	if err := w.Send("udp", WithHandle(pc)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if s := recv(t, got, "the worker to be ready").text; s != "ready" {
		t.Fatalf("worker: %s", s)
	}
	to := &windows.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: pc.LocalAddr().(*net.UDPAddr).Port}
	if err := windows.Sendto(client, []byte("hello"), 0, to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, _, err := windows.Recvfrom(client, buf, 0)
	if err != nil || string(buf[:n]) != "echo:hello" {
		t.Errorf("reply %q, %v; want %q (worker said %q)", buf[:n], err, "echo:hello", drain(got))
	}
}

// TestWindowsSharedListener: with SchedNone, workers that listen on one
// address share the primary's socket, and all of them get connections.
// Disconnect then lets them finish and exit on purpose.
func TestWindowsSharedListener(t *testing.T) {
	setPolicy(t, SchedNone)
	const n = 3
	var ws []*Worker
	addrs := make(chan Address, n)
	for range n {
		w := fork(t, "win-http", "WIN_ADDR=127.0.0.1:0")
		w.OnListening(func(a Address) { addrs <- a })
		ws = append(ws, w)
	}
	var addr string
	for range n {
		a := recv(t, addrs, "the workers to listen")
		if addr != "" && a.String() != addr {
			t.Fatalf("workers listen at %s and %s, want one address", addr, a)
		}
		addr = a.String()
	}
	client := &http.Client{Timeout: testTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	answered := map[string]int{}
	deadline := time.Now().Add(testTimeout)
	for i := 0; len(answered) < n && time.Now().Before(deadline); i++ {
		resp, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader(strconv.Itoa(i)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		answered[string(b)]++
	}
	t.Logf("answers by worker id: %v", answered)
	if len(answered) < n {
		t.Errorf("%d of %d workers answered", len(answered), n)
	}

	exits := make(chan ExitStatus, n)
	for _, w := range ws {
		w.OnExit(func(s ExitStatus) { exits <- s })
	}
	if err := Disconnect(testContext(t)); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	for _, w := range ws {
		if s := recv(t, exits, "the workers to exit"); s != (ExitStatus{}) {
			t.Errorf("worker exited with %v, want code 0", s)
		}
		if !w.ExitedAfterDisconnect() {
			t.Errorf("worker %d: ExitedAfterDisconnect is false after Disconnect", w.ID())
		}
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("%s still accepts connections after Disconnect", addr)
	}
}

func TestWindowsExitStatus(t *testing.T) {
	t.Run("exit code", func(t *testing.T) {
		w := fork(t, "win-exit3")
		exit := make(chan ExitStatus, 1)
		w.OnExit(func(s ExitStatus) { exit <- s })
		if s := recv(t, exit, "the exit"); s != (ExitStatus{Code: 3}) {
			t.Errorf("exit status %v, want code 3", s)
		}
	})
	t.Run("kill", func(t *testing.T) {
		w := fork(t, "idle")
		online := make(chan struct{})
		exit := make(chan ExitStatus, 1)
		w.OnOnline(func() { close(online) })
		w.OnExit(func(s ExitStatus) { exit <- s })
		recv(t, online, "the worker to be online")
		if err := w.Kill(nil); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		// Windows records no signal: the primary reports the one it sent.
		if s := recv(t, exit, "the exit"); s != (ExitStatus{Code: -1, Signal: os.Kill}) {
			t.Errorf("exit status %v, want killed by os.Kill", s)
		}
		if !w.IsDead() || w.ExitedAfterDisconnect() || w.State() != StateDead {
			t.Errorf("after Kill: IsDead %v, ExitedAfterDisconnect %v, State %v; want true, false, dead", w.IsDead(), w.ExitedAfterDisconnect(), w.State())
		}
	})
}

func init() {
	// win-dying forks two workers, checks that they are in the job, prints
	// their process ids and waits to be killed (TestWindowsPrimaryDeath).
	primaries["win-dying"] = func() {
		var pids []string
		for range 2 {
			w, err := Fork(envHelper + "=idle")
			if err != nil {
				fmt.Println("ERROR Fork:", err)
				os.Exit(1)
			}
			online := make(chan struct{})
			w.OnOnline(func() { close(online) })
			select {
			case <-online:
			case <-time.After(testTimeout):
				fmt.Println("ERROR timed out waiting for the worker to be online")
				os.Exit(1)
			}
			pids = append(pids, strconv.Itoa(w.Process().Pid))
		}
		// Whether the job or the end of the channel ends them, the workers die
		// with the primary: see that the job is there.
		if in, err := jobProcesses(); err != nil || len(in) != len(pids) {
			fmt.Printf("ERROR the job holds processes %v (%v), want the workers %v\n", in, err, pids)
		} else {
			fmt.Println("WORKERS", strings.Join(pids, " "))
		}
		time.Sleep(2 * testTimeout) // killed long before
		fmt.Fprintln(os.Stderr, "win-dying: the sub-primary was not killed")
		os.Exit(1)
	}
}

// TestWindowsPrimaryDeath: when the primary is killed outright, the job
// object ends its workers.
func TestWindowsPrimaryDeath(t *testing.T) {
	p := startPrimary(t, "win-dying")
	var r []string
	for len(r) == 0 || r[0] != "WORKERS" && r[0] != "ERROR" {
		r = strings.Fields(p.line(t))
	}
	if r[0] == "ERROR" {
		t.Fatal(strings.Join(r, " "))
	}
	var procs []windows.Handle
	for _, s := range r[1:] {
		pid, _ := strconv.Atoi(s)
		h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_TERMINATE, false, uint32(pid))
		if err != nil {
			t.Fatalf("worker %d: %v", pid, err)
		}
		defer windows.CloseHandle(h)
		procs = append(procs, h)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, h := range procs {
		if ev, _ := windows.WaitForSingleObject(h, uint32(testTimeout/time.Millisecond)); ev != windows.WAIT_OBJECT_0 {
			t.Errorf("a worker still runs %v after its primary was killed", testTimeout)
			windows.TerminateProcess(h, 1)
		}
	}
}

// jobProcesses returns the ids of the processes in the workers' job.
func jobProcesses() ([]uintptr, error) {
	job, err := workerJob()
	if err != nil {
		return nil, err
	}
	var list struct {
		assigned, listed uint32
		ids              [16]uintptr
	}
	if err := windows.QueryInformationJobObject(job, windows.JobObjectBasicProcessIdList,
		uintptr(unsafe.Pointer(&list)), uint32(unsafe.Sizeof(list)), nil); err != nil {
		return nil, err
	}
	return list.ids[:list.listed], nil
}

// TestWindowsWorkerDisconnect: a worker disconnected from the primary exits
// with code 0, on purpose.
func TestWindowsWorkerDisconnect(t *testing.T) {
	w := fork(t, "idle")
	exit := make(chan ExitStatus, 1)
	w.OnExit(func(s ExitStatus) { exit <- s })
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if s := recv(t, exit, "the exit"); s != (ExitStatus{}) {
		t.Errorf("exit status %v, want code 0", s)
	}
	if !w.ExitedAfterDisconnect() {
		t.Error("ExitedAfterDisconnect is false after Disconnect")
	}
}

func TestWindowsSettings(t *testing.T) {
	t.Run("ExtraFiles", func(t *testing.T) {
		f, err := os.CreateTemp("", "clusternet-test-")
		if err != nil {
			t.Fatal(err)
		}
		path := f.Name()
		t.Cleanup(func() { os.Remove(path) }) // after the worker is gone
		defer f.Close()
		h, err := rawFD(f)
		if err != nil {
			t.Fatal(err)
		}
		withSettings(t, Settings{ExtraFiles: []*os.File{nil, f}})
		w := fork(t, "win-extra", "WIN_EXTRA="+strconv.FormatUint(uint64(h), 10))
		got := notes(w)
		if s := recv(t, got, "the worker to write").text; s != "written" {
			t.Fatalf("worker: %s", s)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "through ExtraFiles" {
			t.Errorf("file holds %q, %v; want %q", b, err, "through ExtraFiles")
		}
		// Inheritable only for the start.
		var flags uint32
		procGetHandleInformation.Call(h, uintptr(unsafe.Pointer(&flags)))
		if flags&windows.HANDLE_FLAG_INHERIT != 0 {
			t.Error("the file's handle stayed inheritable after Fork")
		}
	})
	t.Run("Uid", func(t *testing.T) {
		uid := 1000
		withSettings(t, Settings{Uid: &uid})
		if w, err := Fork(); !errors.Is(err, errors.ErrUnsupported) {
			if err == nil {
				reap(t, w)
			}
			t.Errorf("Fork with Settings.Uid: %v, want errors.ErrUnsupported", err)
		}
	})
}
