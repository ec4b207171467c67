package clusternet

// Shared: messages and the handles they carry, both ways.

import (
	"fmt"
	"net"
	"os"
	"sync"
)

// handleKind says what a handle sent with a message is, so that the receiver
// can rebuild the right type.
type handleKind byte

const (
	handleNone handleKind = iota
	handleConn
	handleListener
	handlePacketConn
	handleFile
	handleKindEnd
)

func (k handleKind) String() string {
	switch k {
	case handleConn:
		return "net.Conn"
	case handleListener:
		return "net.Listener"
	case handlePacketConn:
		return "net.PacketConn"
	case handleFile:
		return "*os.File"
	}
	return "no handle"
}

// Message is a message received from the other side of the channel, with the
// handle that came with it, if any.
//
// A handle is the receiver's to take, once, with Conn, Listener, PacketConn
// or File, from any handler that sees the message. A handle that no handler
// takes is closed once the handlers have returned.
type Message struct {
	data  []byte
	codec Serialization
	gob   *gobDecoder // decodes data, if a kept decoder checked it
	h     *receivedHandle
}

// Decode decodes the message into v, as json.Unmarshal or a gob.Decoder would.
// It may be called any number of times, from any goroutine.
func (m Message) Decode(v any) error {
	var err error
	if m.gob != nil {
		err = m.gob.decodeMessage(m.data, v)
	} else {
		err = m.codec.decode(m.data, v)
	}
	if err != nil {
		return fmt.Errorf("clusternet: decoding %v message: %w", m.codec, err)
	}
	return nil
}

// Raw returns the encoded message: with JSON its text; with Gob a complete
// gob stream holding one value, preceded by the definitions of the types it
// uses, which a new gob.Decoder decodes.
func (m Message) Raw() []byte { return m.data }

// HasHandle reports whether a handle came with the message and is still
// there to be taken.
func (m Message) HasHandle() bool {
	if m.h == nil {
		return false
	}
	m.h.mu.Lock()
	defer m.h.mu.Unlock()
	return !m.h.taken
}

// Conn returns the connection sent with the message. It returns an error
// wrapping ErrInvalidHandle if none came with it, it was not a connection, or
// it was already taken.
func (m Message) Conn() (net.Conn, error) {
	h, err := m.take(handleConn)
	if err != nil {
		return nil, err
	}
	return connFromHandle(h)
}

// Listener returns the listener sent with the message; errors as for Conn.
func (m Message) Listener() (net.Listener, error) {
	h, err := m.take(handleListener)
	if err != nil {
		return nil, err
	}
	return listenerFromHandle(&h)
}

// PacketConn returns the packet connection sent with the message; errors as
// for Conn.
func (m Message) PacketConn() (net.PacketConn, error) {
	h, err := m.take(handlePacketConn)
	if err != nil {
		return nil, err
	}
	return packetConnFromHandle(&h)
}

// File returns the handle sent with the message as a file, whatever its kind
// (a socket sent as a net.Conn comes out as its descriptor), or nil if there
// is none or it was already taken. The caller owns the file.
func (m Message) File() *os.File {
	h, err := m.take(handleNone)
	if err != nil {
		return nil
	}
	return fileFromHandle(h, "clusternet-handle")
}

func (m Message) take(want handleKind) (sysHandle, error) {
	if m.h == nil {
		return 0, fmt.Errorf("%w: no handle came with this message", ErrInvalidHandle)
	}
	return m.h.take(want)
}

// receivedHandle is a handle that arrived with a message, shared by the
// copies of the Message that the handlers see.
type receivedHandle struct {
	mu    sync.Mutex
	kind  handleKind
	h     sysHandle
	taken bool
}

func (r *receivedHandle) take(want handleKind) (sysHandle, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.taken:
		return 0, fmt.Errorf("%w: the %v sent with this message was already taken", ErrInvalidHandle, r.kind)
	case want != handleNone && want != r.kind:
		return 0, fmt.Errorf("%w: the message carries a %v, not a %v", ErrInvalidHandle, r.kind, want)
	}
	r.taken = true
	return r.h, nil
}

// release closes the handle unless a handler took it.
func (r *receivedHandle) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.taken {
		r.taken = true
		closeHandles([]sysHandle{r.h})
	}
}

// SendOption changes how Send sends a message.
type SendOption func(*sendOptions)

type sendOptions struct {
	handle   any
	keepOpen bool
}

// WithHandle sends h with the message: a net.Conn, net.Listener,
// net.PacketConn or *os.File backed by a descriptor (a socket handle on
// Windows). The receiver gets its own copy. Anything else makes Send return
// ErrInvalidHandle.
func WithHandle(h any) SendOption { return func(o *sendOptions) { o.handle = h } }

// KeepOpen keeps the sender's copy of a connection sent with WithHandle open.
// Without it, a net.Conn is closed on the sender's side once it is delivered
// to the channel, as in Node. Listeners, packet connections and files always
// stay open on the sender's side.
func KeepOpen() SendOption { return func(o *sendOptions) { o.keepOpen = true } }

// classifyHandle says what kind of handle h is.
func classifyHandle(h any) (handleKind, error) {
	switch h.(type) {
	case *os.File:
		return handleFile, nil
	case net.Listener:
		return handleListener, nil
	case net.PacketConn:
		return handlePacketConn, nil
	case net.Conn:
		return handleConn, nil
	}
	return handleNone, fmt.Errorf("%w: cannot send a %T (want a net.Conn, net.Listener, net.PacketConn or *os.File)", ErrInvalidHandle, h)
}

// encodeMessage builds a message frame, duplicating the handle in opts.
func encodeMessage(codec Serialization, v any, opts []SendOption) (outFrame, error) {
	var o sendOptions
	for _, opt := range opts {
		opt(&o)
	}
	var f outFrame
	kind := handleNone
	if o.handle != nil {
		var err error
		if kind, err = classifyHandle(o.handle); err != nil {
			return f, err
		}
		h, err := dupHandle(o.handle)
		if err != nil {
			return f, err
		}
		f.handles = []sysHandle{h}
		if c, ok := o.handle.(net.Conn); ok && kind == handleConn && !o.keepOpen {
			f.after = func(error) { c.Close() }
		}
	}
	// The frame is written from the pooled buffer, which goes back to the
	// pool once written: a copy would cost as much as the encoding for a
	// large message of strings.
	buf := getBuffer()
	buf.Write(make([]byte, frameHeaderLen))
	buf.WriteByte(byte(kind))
	if err := codec.encode(buf, v); err != nil {
		putBuffer(buf)
		closeHandles(f.handles)
		return outFrame{}, err
	}
	f.b, f.buf = buf.Bytes(), buf
	appendHeader(f.b[:0], frameMessage, len(f.b)-frameHeaderLen, len(f.handles))
	return f, nil
}
