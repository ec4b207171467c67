//go:build windows

package clusternet

// Shared: the channel's transport on Windows, a duplex named pipe whose
// handles travel as records of their own.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

// sysHandle is a handle of this process: a socket, or a kernel object such
// as a file or a pipe. Handle values mean nothing in another process, so the
// transport exports each handle it sends for the peer (see pipeTransport).
type sysHandle = windows.Handle

func closeHandles(hs []sysHandle) {
	for _, h := range hs {
		closeHandle(h)
	}
}

// closeHandle closes a socket with closesocket, as Winsock asks, and any
// other handle with CloseHandle.
func closeHandle(h sysHandle) {
	if err := windows.Closesocket(h); err == windows.WSAENOTSOCK {
		windows.CloseHandle(h)
	}
}

// soType is SO_TYPE, which golang.org/x/sys/windows does not define.
const soType = 0x1008

// isSocket reports whether h is a socket: sockets travel as Winsock protocol
// information, everything else as a duplicated handle.
func isSocket(h windows.Handle) bool {
	_, err := windows.GetsockoptInt(h, windows.SOL_SOCKET, soType)
	return err == nil
}

// The records of a pipeTransport's byte stream.
const (
	recHello   = 'P' // [pid uint32]: the sender's process id, first record each way
	recData    = 'D' // [n uint32][n bytes]: frame bytes
	recHandles = 'H' // [count byte][entries]: handles for the data record that follows
)

// The kinds of entry in a handles record.
const (
	entrySocket = 'S' // [WSAPROTOCOL_INFOW]: the receiver makes its socket with WSASocket
	entryObject = 'O' // [uint64]: a handle the sender already duplicated into the receiver
)

const protocolInfoLen = int(unsafe.Sizeof(windows.WSAProtocolInfo{}))

// pipeBufSize is the pipe's buffer in each direction, and the largest write
// that is copied into one buffer rather than written in parts.
const pipeBufSize = 64 << 10

// pipeTransport carries frames over one end of a duplex named pipe, the
// Windows counterpart of a Unix socket pair. Windows has no SCM_RIGHTS, so
// handles travel in the byte stream itself, in records of their own:
//
//	[recHello][pid]               who the peer is, so that handles can be exported to it
//	[recData][n][n bytes]         frame bytes
//	[recHandles][count][entries]  handles, always followed by the data record that starts their frame
//
// At send time a socket is exported with WSADuplicateSocket (as libuv sends
// sockets on Node's IPC pipes) and any other handle with DuplicateHandle into
// the peer process. The receiver has its own handles before the first byte
// of the frame that announces them, which is what frameReader expects.
//
// The pipe is in overlapped mode, so that Go's poller runs a read and a write
// at once and Close interrupts both.
type pipeTransport struct {
	f       *os.File
	r       *bufio.Reader // reader only
	greeted bool          // reader only: the peer's hello has arrived
	left    int           // reader only: bytes of the current data record not yet read
	wbuf    []byte        // writer only

	peerKnown chan struct{} // closed once peerPid or peerErr is set
	peerOnce  sync.Once
	peerPid   uint32
	peerErr   error

	mu       sync.Mutex
	closed   bool
	peerProc windows.Handle // opened on the first export of a handle that is not a socket
}

// newPipeTransport takes f, one end of a connected pipe, and introduces this
// process to the peer.
func newPipeTransport(f *os.File) (*pipeTransport, error) {
	t := &pipeTransport{f: f, r: bufio.NewReaderSize(f, pipeBufSize), peerKnown: make(chan struct{})}
	hello := binary.BigEndian.AppendUint32([]byte{recHello}, windows.GetCurrentProcessId())
	// A peer that is already gone is not an error here: the reader sees
	// the end of the stream and the channel closes as usual.
	if _, err := f.Write(hello); err != nil && !isConnReset(err) {
		f.Close()
		return nil, err
	}
	return t, nil
}

// setPeer records who the peer is, or why that will never be known.
func (t *pipeTransport) setPeer(pid uint32, err error) {
	t.peerOnce.Do(func() {
		t.peerPid, t.peerErr = pid, err
		close(t.peerKnown)
	})
}

// waitPeer waits for the peer's hello, which the reader takes in.
func (t *pipeTransport) waitPeer() (uint32, error) {
	<-t.peerKnown
	return t.peerPid, t.peerErr
}

func (t *pipeTransport) send(b []byte, hs []sysHandle) error {
	rec, err := t.exportHandles(hs)
	if err != nil {
		return err
	}
	return t.write(rec, dataHeader(len(b)), b)
}

func (t *pipeTransport) writev(bufs [][]byte) error {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return t.write(append([][]byte{dataHeader(n)}, bufs...)...)
}

func dataHeader(n int) []byte {
	return binary.BigEndian.AppendUint32([]byte{recData}, uint32(n))
}

// write writes parts in order, in one system call when they are small.
func (t *pipeTransport) write(parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n <= pipeBufSize {
		b := t.wbuf[:0]
		for _, p := range parts {
			b = append(b, p...)
		}
		t.wbuf = b
		_, err := t.f.Write(b)
		return err
	}
	for _, p := range parts {
		if _, err := t.f.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// exportHandles returns the handles record that gives the peer its own
// copies of hs.
func (t *pipeTransport) exportHandles(hs []sysHandle) ([]byte, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	if len(hs) > maxFrameHandles {
		return nil, fmt.Errorf("clusternet: %d handles in one frame, more than the limit of %d", len(hs), maxFrameHandles)
	}
	pid, err := t.waitPeer()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrChannelClosed
	}
	rec := []byte{recHandles, byte(len(hs))}
	var exported []windows.Handle // objects already in the peer, to take back on failure
	for _, h := range hs {
		if isSocket(h) {
			var info windows.WSAProtocolInfo
			if err := windows.WSADuplicateSocket(h, pid, &info); err != nil {
				err = os.NewSyscallError("WSADuplicateSocket", err)
				t.takeBack(exported)
				return nil, err
			}
			rec = append(rec, entrySocket)
			rec = append(rec, unsafe.Slice((*byte)(unsafe.Pointer(&info)), protocolInfoLen)...)
			continue
		}
		ph, err := t.openPeerLocked(pid)
		if err == nil {
			var theirs windows.Handle
			err = windows.DuplicateHandle(windows.CurrentProcess(), h, ph, &theirs, 0, false, windows.DUPLICATE_SAME_ACCESS)
			if err == nil {
				exported = append(exported, theirs)
				rec = append(rec, entryObject)
				rec = binary.BigEndian.AppendUint64(rec, uint64(theirs))
				continue
			}
			err = os.NewSyscallError("DuplicateHandle", err)
		}
		t.takeBack(exported)
		return nil, err
	}
	return rec, nil
}

// openPeerLocked returns a handle to the peer process that allows
// duplicating handles into it. Called with t.mu held.
func (t *pipeTransport) openPeerLocked(pid uint32) (windows.Handle, error) {
	if t.peerProc == 0 {
		ph, err := windows.OpenProcess(windows.PROCESS_DUP_HANDLE, false, pid)
		if err != nil {
			return 0, fmt.Errorf("clusternet: peer process %d: %w", pid, os.NewSyscallError("OpenProcess", err))
		}
		t.peerProc = ph
	}
	return t.peerProc, nil
}

// takeBack closes handles duplicated into the peer for a record that will
// not be sent. Called with t.mu held.
func (t *pipeTransport) takeBack(theirs []windows.Handle) {
	for _, h := range theirs {
		windows.DuplicateHandle(t.peerProc, h, 0, nil, 0, false, windows.DUPLICATE_CLOSE_SOURCE)
	}
}

func (t *pipeTransport) recv(b []byte) (int, []sysHandle, error) {
	var hs []sysHandle
	for t.left == 0 {
		typ, err := t.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(hs) > 0 {
				err = protocolErrorf("channel closed between handles and their frame")
			}
			t.setPeer(0, ErrChannelClosed)
			return 0, hs, err
		}
		switch {
		case typ == recHello && !t.greeted:
			var pid uint32
			if pid, err = t.readUint32(); err == nil {
				t.greeted = true
				t.setPeer(pid, nil)
			}
		case !t.greeted:
			// Nothing can be exported to a peer that has not said who it is.
			err = protocolErrorf("the peer did not introduce itself")
		case typ == recData:
			var n uint32
			if n, err = t.readUint32(); err == nil && n == 0 {
				err = protocolErrorf("empty data record")
			}
			t.left = int(n)
		case typ == recHandles:
			hs, err = t.importHandles(hs)
		default:
			err = protocolErrorf("unexpected record type %#x", typ)
		}
		if err != nil {
			t.setPeer(0, ErrChannelClosed)
			return 0, hs, err
		}
	}
	n, err := t.r.Read(b[:min(len(b), t.left)])
	t.left -= n
	if err == io.EOF {
		err = protocolErrorf("channel closed in the middle of a data record")
	}
	return n, hs, err
}

func (t *pipeTransport) readUint32() (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(t.r, b[:]); err != nil {
		return 0, truncatedRecord(err)
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

func truncatedRecord(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return protocolErrorf("channel closed in the middle of a record")
	}
	return err
}

// importHandles reads a handles record and appends the handles it gives this
// process to hs. On error it returns what it imported so far, for the caller
// to close.
func (t *pipeTransport) importHandles(hs []sysHandle) ([]sysHandle, error) {
	count, err := t.r.ReadByte()
	if err != nil {
		return hs, truncatedRecord(err)
	}
	if count == 0 || len(hs)+int(count) > maxPendingHandles {
		return hs, protocolErrorf("peer sent a record of %d handles after %d others", count, len(hs))
	}
	for range count {
		kind, err := t.r.ReadByte()
		if err != nil {
			return hs, truncatedRecord(err)
		}
		switch kind {
		case entrySocket:
			var info windows.WSAProtocolInfo
			if _, err := io.ReadFull(t.r, unsafe.Slice((*byte)(unsafe.Pointer(&info)), protocolInfoLen)); err != nil {
				return hs, truncatedRecord(err)
			}
			s, err := windows.WSASocket(-1, -1, -1, &info, 0, windows.WSA_FLAG_OVERLAPPED|windows.WSA_FLAG_NO_HANDLE_INHERIT)
			if err != nil {
				return hs, fmt.Errorf("clusternet: taking a socket from the peer: %w", os.NewSyscallError("WSASocket", err))
			}
			hs = append(hs, s)
		case entryObject:
			var b [8]byte
			if _, err := io.ReadFull(t.r, b[:]); err != nil {
				return hs, truncatedRecord(err)
			}
			// The peer duplicated the handle into this process. A peer
			// could name a handle of ours instead, but it runs as the
			// same user and could as well open this process outright.
			h := windows.Handle(binary.BigEndian.Uint64(b[:]))
			if h == 0 || h == windows.InvalidHandle {
				return hs, protocolErrorf("peer sent handle %#x", uint64(h))
			}
			hs = append(hs, h)
		default:
			return hs, protocolErrorf("unknown handle entry %#x", kind)
		}
	}
	return hs, nil
}

func (t *pipeTransport) close() error {
	t.setPeer(0, ErrChannelClosed)
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		if t.peerProc != 0 {
			windows.CloseHandle(t.peerProc)
		}
	}
	t.mu.Unlock()
	return t.f.Close()
}

func isConnReset(err error) bool {
	return errors.Is(err, windows.ERROR_BROKEN_PIPE) || errors.Is(err, windows.ERROR_NO_DATA) ||
		errors.Is(err, windows.ERROR_PIPE_NOT_CONNECTED) || errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
}

// channelPair returns the primary's end of a new channel and the worker's
// end, a handle for the worker to inherit (not inheritable until
// startProcess makes it so for the worker alone).
//
// The channel is a duplex named pipe with a random name that only this
// primary creates (FILE_FLAG_FIRST_PIPE_INSTANCE) and that takes a single
// local client, connected here at once: a process that raced to connect
// first makes the worker's end fail to open, so nobody else can ever hold it.
func channelPair() (transport, sysHandle, error) {
	name, err := windows.UTF16PtrFromString(`\\.\pipe\clusternet-` + rand.Text())
	if err != nil {
		return nil, 0, err
	}
	server, err := windows.CreateNamedPipe(name,
		windows.PIPE_ACCESS_DUPLEX|windows.FILE_FLAG_OVERLAPPED|windows.FILE_FLAG_FIRST_PIPE_INSTANCE,
		windows.PIPE_TYPE_BYTE|windows.PIPE_READMODE_BYTE|windows.PIPE_WAIT|windows.PIPE_REJECT_REMOTE_CLIENTS,
		1, pipeBufSize, pipeBufSize, 0, nil)
	if err != nil {
		return nil, 0, os.NewSyscallError("CreateNamedPipe", err)
	}
	client, err := windows.CreateFile(name, windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil,
		windows.OPEN_EXISTING, windows.FILE_FLAG_OVERLAPPED, 0)
	if err != nil {
		windows.CloseHandle(server)
		return nil, 0, os.NewSyscallError("CreateFile", err)
	}
	// Both ends exist, so this does not wait: it only confirms the connection.
	if err := windows.ConnectNamedPipe(server, nil); err != nil && err != windows.ERROR_PIPE_CONNECTED {
		windows.CloseHandle(server)
		windows.CloseHandle(client)
		return nil, 0, os.NewSyscallError("ConnectNamedPipe", err)
	}
	t, err := newPipeTransport(os.NewFile(uintptr(server), "clusternet-primary"))
	if err != nil {
		windows.CloseHandle(client)
		return nil, 0, err
	}
	return t, client, nil
}

// inheritedChannel opens the channel a worker inherited as handle h, after
// checking that it is a pipe.
func inheritedChannel(h uint64) (transport, error) {
	ph := windows.Handle(h)
	var flags uint32
	if err := windows.GetNamedPipeInfo(ph, &flags, nil, nil, nil); err != nil {
		return nil, fmt.Errorf("handle %#x is not a pipe: %w", h, os.NewSyscallError("GetNamedPipeInfo", err))
	}
	// Not inheritable any more, so that the worker's own children never get it.
	if err := windows.SetHandleInformation(ph, windows.HANDLE_FLAG_INHERIT, 0); err != nil {
		return nil, fmt.Errorf("handle %#x: %w", h, os.NewSyscallError("SetHandleInformation", err))
	}
	return newPipeTransport(os.NewFile(uintptr(ph), "clusternet-worker"))
}
