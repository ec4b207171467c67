package clusternet

// Shared: the protocol between the primary and its workers, above the framing of
// frame.go: the kinds of frame, who sends each and what its body holds; the
// listen request and its reply; how errors cross; the records of the
// round-robin handoff sockets (primary_rr.go); how addresses are written.
// Both sides include this file; nothing here runs on its own.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
)

// frameKind is what a frame carries. The body of each kind, and who may
// send it: a peer that sends a kind it may not, or a body of another shape,
// breaks the protocol (ErrProtocol) and is disconnected.
type frameKind uint8

const (
	frameMessage               frameKind = iota + 1 // either way: [handle kind][encoded value]
	frameOnline                                     // worker → primary
	frameListen                                     // worker → primary: JSON listenRequest
	frameListenReply                                // primary → worker: JSON listenReply, maybe one handle
	frameListening                                  // worker → primary: JSON Address: listening there
	frameDemand                                     // worker → primary: [key][n]: accepting; queue up to n connections
	frameReclaimed                                  // primary → worker: [key]: took back the queue; demand again
	frameUnlisten                                   // worker → primary: [key]: listener closed
	frameDisconnect                                 // primary → worker: disconnect yourself
	frameExitedAfterDisconnect                      // worker → primary: leaving on purpose
	frameRebound                                    // primary → worker: [key], one handle: the address's new socket (below)
	frameSignalled                                  // worker → primary: [signal]: drains on this signal (below)
	frameVerdict                                    // primary → worker: [die]: the answer to frameSignalled (below)
	frameRefused                                    // primary → worker: text: why the worker is refused (below)
	frameAdopt                                      // primary → worker: [key], one handle: a handoff socket for a SchedReusePort listener (below)
	frameKindEnd
)

// Versions. The primary and a worker may be different builds: Reload runs
// the program on disk now, under a primary started from an older one. The
// worker's first frame is frameOnline, whose body is the protocol version it
// speaks, 4 bytes big endian (protocolVersion). The primary answers a
// version it does not speak with frameRefused, whose body is the reason in
// UTF-8, naming both versions, and discards unread whatever that worker
// sends next; the worker writes the reason to its standard error and exits
// with code 1 (the primary kills a worker that does not, after a second). A frameOnline without
// a body comes from a build older than versions: version 0, refused.
//
// So that two builds can always tell each other this much, the framing
// (frame.go), frameOnline (kind 2) and frameRefused (kind 14) keep their
// numbers and bodies in every version; anything else may change with the
// version. A frame other than frameOnline before it is a protocol error.
//
// Version 1: the frames up to frameRefused. Version 2: frameAdopt.
const protocolVersion = 2

// spokenVersion is the version a worker reports: protocolVersion, except
// in the tests of a worker built from another release. Set before any init
// function runs, never after.
var spokenVersion uint32 = protocolVersion

// onlineFrame is the worker's first frame: online, speaking spokenVersion;
// version 0 is a build older than versions, whose report had no body.
func onlineFrame() []byte {
	if spokenVersion == 0 {
		return newFrame(frameOnline, 0, 0)
	}
	return binary.BigEndian.AppendUint32(newFrame(frameOnline, 4, 0), spokenVersion)
}

// onlineVersion reads the version in a frameOnline body.
func onlineVersion(body []byte) (uint32, error) {
	switch len(body) {
	case 0:
		return 0, nil
	case 4:
		return binary.BigEndian.Uint32(body), nil
	}
	return 0, protocolErrorf("an online report of %d bytes, want 4", len(body))
}

// frameRebound (primary → worker) replaces the listening socket that a
// worker accepts on for key, one the primary shares with other workers
// (listen reply mode "shared"), after that socket stopped listening: any
// process holding a copy can stop it for all (on Linux, shutdown(SHUT_RD),
// or connect(AF_UNSPEC) on TCP). The primary binds the address again and
// sends the new socket to every worker subscribed to it, and may send it
// to a worker more than once. Body: the key, 4 bytes big endian; exactly
// one handle, the new listening socket. The worker closes its copy of the
// old socket and accepts on the new one; for a key it does not listen on
// (any more, or yet) it closes the handle. Another body length or handle
// count is a protocol error. Never sent on Windows, where a worker cannot
// stop a shared listening socket.

// frameAdopt (primary → worker) gives a worker's SchedReusePort listener
// (listen reply mode "own") a handoff socket, as SchedRR's (primary_rr.go),
// on which the primary sends connections it accepted on the socket of a
// worker that left (primary_reuseport.go). Body: the key, 4 bytes big
// endian; exactly one handle, the worker's end of the handoff socket. The
// listener's Accept takes one record from it at a time, ahead of its own
// socket, and a record wakes an Accept waiting on its own socket. What a
// worker leaves there, the primary takes back when the worker unlistens or
// dies. Sent at most once per listen; for a key the worker does not listen
// on (any more) it closes the handle. Another body length or handle count
// is a protocol error.

// frameSignalled (worker → primary) says that the worker got SIGINT or
// SIGTERM and drains, as on frameDisconnect (see Settings.DieOnSignal).
// Body: the signal's number, 4 bytes big endian. The primary answers with
// frameVerdict, whose body is one byte: 1 if it sent that signal itself
// (Worker.Kill), and the worker then takes the signal's default action at
// once, so that Kill still kills; 0 otherwise, and the worker goes on
// draining and exits once its connections are closed (the primary got the
// signal too and disconnects its workers, or Run decides whether to
// replace the worker). A worker does not exit before the verdict, or before
// the channel closes. Another body length is a protocol error.

// keyFrame builds a frame whose body is a key and, for some kinds, a count.
func keyFrame(kind frameKind, key uint32, n int, withCount bool) []byte {
	size := 4
	if withCount {
		size = 8
	}
	b := newFrame(kind, size, 0)
	b = binary.BigEndian.AppendUint32(b, key)
	if withCount {
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return b
}

// parseKeyFrame reads a frame built by keyFrame.
func parseKeyFrame(f frame, withCount bool) (key uint32, n int, err error) {
	want := 4
	if withCount {
		want = 8
	}
	if len(f.body) != want {
		return 0, 0, protocolErrorf("frame of kind %d has a body of %d bytes, want %d", f.kind, len(f.body), want)
	}
	key = binary.BigEndian.Uint32(f.body)
	if withCount {
		n = int(binary.BigEndian.Uint32(f.body[4:]))
	}
	return key, n, nil
}

// listenRequest (frameListen) asks the primary for an address: Seq
// matches the reply, Network and Address are as Listen was given them (a
// Unix socket path made absolute), Packet is ListenPacket's.
type listenRequest struct {
	Seq       uint32
	Network   string
	Address   string
	Index     int  `json:",omitempty"` // the worker's listens on this address before this one that are still open (child_listen.go)
	Backlog   int  `json:",omitempty"`
	ReusePort bool `json:",omitempty"`
	Packet    bool `json:",omitempty"`
	ReuseAddr bool `json:",omitempty"` // UDP: bind with SO_REUSEADDR
}

// listenReply (frameListenReply) grants an address with a key for the
// later frames about it, and how it is shared, with one handle (the
// socket, or the worker's end of its handoff socket); or refuses it with
// Err.
type listenReply struct {
	Seq     uint32
	Key     uint32     `json:",omitempty"`
	Mode    shareMode  `json:",omitempty"`
	Address string     `json:",omitempty"` // the bound address, for modeRR
	Err     *wireError `json:",omitempty"`
}

// shareMode is how the primary shares one address with a worker, as the
// listen reply says. The scheduling policy picks it (modeFor): SchedRR is
// modeRR, SchedNone modeShared, SchedReusePort modeOwn; UDP and Unix
// sockets are never modeRR, Unix sockets never modeOwn.
type shareMode string

const (
	modeRR     shareMode = "rr"     // the primary accepts and hands over connections
	modeShared shareMode = "shared" // the worker accepts on the primary's socket
	modeOwn    shareMode = "own"    // the worker has its own SO_REUSEPORT socket, bound by the primary
)

// wireError carries a bind error from the primary to the worker, keeping its
// errno so that errors.Is works on the worker's side.
type wireError struct {
	Op    string `json:",omitempty"`
	Errno uint64 `json:",omitempty"`
	Msg   string
}

// toWireError makes err, from a bind in the primary, a wireError.
func toWireError(err error) *wireError {
	we := &wireError{Msg: err.Error()}
	if oe, ok := err.(*net.OpError); ok {
		// The worker wraps it in an OpError of its own, naming the same
		// network and address.
		we.Msg = oe.Err.Error()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		we.Errno = uint64(errno)
		var se *os.SyscallError
		if errors.As(err, &se) {
			we.Op = se.Syscall
		}
	}
	return we
}

// error is the worker's side of toWireError: the error its Listen returns.
func (we *wireError) error(network, address string) error {
	var err error = errors.New(we.Msg)
	if we.Errno != 0 {
		op := we.Op
		if op == "" {
			op = "listen"
		}
		err = os.NewSyscallError(op, syscall.Errno(we.Errno))
		if !strings.HasSuffix(we.Msg, err.Error()) {
			// The primary said more than the errno (why, and what to do):
			// its words, with the errno for errors.Is.
			err = &explainedError{msg: we.Msg, err: err}
		}
	}
	return &net.OpError{Op: "listen", Net: network, Addr: strAddr(address), Err: fmt.Errorf("primary: %w", err)}
}

// explainedError is an error from the primary whose text says more than
// the error it wraps.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }

func (e *explainedError) Unwrap() error { return e.err }

// strAddr is an address as a string, for errors about an address that
// was not bound.
type strAddr string

func (a strAddr) Network() string { return "" }

func (a strAddr) String() string { return string(a) }

// The handoff records: one byte, each with one connection.
const (
	recordConn     byte = 'c'
	recordConnLast byte = 'C' // the connection that filled the window: ask for more once it is taken
)

// isSocketFile reports whether a listen on network and address makes a
// socket file: a Unix socket path that is not an abstract name (@...).
func isSocketFile(network, address string) bool {
	return network == "unix" && address != "" && address[0] != '@'
}

// checkListenNetwork is the one check of a network name: tcp, tcp4, tcp6
// and unix for Listen, udp, udp4 and udp6 for ListenPacket.
func checkListenNetwork(network string, packet bool) error {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
		if !packet {
			return nil
		}
	case "udp", "udp4", "udp6":
		if packet {
			return nil
		}
	}
	return net.UnknownNetworkError(network)
}

// parseAddr turns the address the primary reports into a net.Addr.
func parseAddr(s string) (net.Addr, error) {
	network, address, _ := cutNetwork(s)
	switch network {
	case "unix":
		return &net.UnixAddr{Name: address, Net: "unix"}, nil
	default:
		return net.ResolveTCPAddr("tcp", address)
	}
}

// joinNetwork and cutNetwork carry an address with its network in one string.
func joinNetwork(network, address string) string { return network + "|" + address }

func cutNetwork(s string) (network, address string, ok bool) { return strings.Cut(s, "|") }
