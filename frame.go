package clusternet

// Shared: the framing of the channel between the primary and a worker, written as a
// specification, and the reader that enforces it. The frame kinds and their
// bodies are in protocol.go.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A frame is the unit on the channel:
//
//	[0:4] body length, big endian
//	[4]   kind
//	[5]   number of handles that travel with the frame
//	[6:8] zero
//	[8:]  body
//
// Handles travel out of band (SCM_RIGHTS on Unix) and reach the reader no
// later than the first byte of the frame that announces them.
const frameHeaderLen = 8

// maxFrameHandles bounds the handles one frame may carry (Linux's
// SCM_MAX_FD is 253).
const maxFrameHandles = 64

// maxPendingHandles bounds the handles received but not yet claimed by a
// frame, so that a peer cannot make the reader hoard descriptors.
const maxPendingHandles = 2 * maxFrameHandles

// appendHeader appends a frame header to b.
func appendHeader(b []byte, kind frameKind, bodyLen, handles int) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(bodyLen))
	return append(b, byte(kind), byte(handles), 0, 0)
}

// newFrame returns a frame buffer holding the header for a body of bodyLen
// bytes that the caller appends.
func newFrame(kind frameKind, bodyLen, handles int) []byte {
	return appendHeader(make([]byte, 0, frameHeaderLen+bodyLen), kind, bodyLen, handles)
}

// frame is one frame read from the channel. body aliases the reader's buffer
// and is valid until the next call to next, unless owned.
type frame struct {
	kind    frameKind
	body    []byte
	owned   bool // body is the caller's: too large for the buffer, it was read on its own
	handles []sysHandle
}

// transport is the platform's byte stream with handles beside it.
type transport interface {
	// send writes all of b, with hs attached to its first byte.
	send(b []byte, hs []sysHandle) error
	// writev writes all of bufs, in order.
	writev(bufs [][]byte) error
	// recv reads into b and returns the handles that arrived with the bytes.
	recv(b []byte) (int, []sysHandle, error)
	close() error
}

const readBufSize = 64 << 10

// frameReader splits the transport's stream into frames and matches the
// handles that arrive with it to the frames that announce them.
type frameReader struct {
	t       transport
	max     int       // largest body accepted
	end     frameKind // kinds from 1 below end are known: frameKindEnd, or upgradeKindEnd on an upgrade's handover
	buf     []byte
	r, w    int         // buf[r:w] is read but not yet parsed
	pending []sysHandle // received, not yet claimed by a frame
}

func newFrameReader(t transport, max int) *frameReader {
	return &frameReader{t: t, max: max, end: frameKindEnd, buf: make([]byte, readBufSize)}
}

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// next returns the next frame. Its handles are the caller's to close.
// Errors other than io.EOF leave the stream unusable.
func (fr *frameReader) next() (frame, error) {
	if fr.r == fr.w && len(fr.pending) > 0 {
		return frame{}, protocolErrorf("received %d handle(s) that no frame announced", len(fr.pending))
	}
	for fr.w-fr.r < frameHeaderLen {
		if err := fr.fill(); err != nil {
			if errors.Is(err, io.EOF) && fr.w > fr.r {
				err = protocolErrorf("channel closed in the middle of a frame header")
			}
			return frame{}, err
		}
	}
	h := fr.buf[fr.r : fr.r+frameHeaderLen]
	n := int(binary.BigEndian.Uint32(h[0:4]))
	f := frame{kind: frameKind(h[4])}
	nh := int(h[5])
	switch {
	case f.kind == 0 || f.kind >= fr.end:
		return frame{}, protocolErrorf("unknown frame kind %d", h[4])
	case h[6] != 0 || h[7] != 0:
		return frame{}, protocolErrorf("malformed frame header % x", h)
	case n > fr.max:
		return frame{}, protocolErrorf("frame of %d bytes exceeds the limit of %d bytes (Settings.MaxMessageSize)", n, fr.max)
	case nh > maxFrameHandles:
		return frame{}, protocolErrorf("frame announces %d handles, more than the limit of %d", nh, maxFrameHandles)
	case nh > len(fr.pending):
		return frame{}, protocolErrorf("frame announces %d handle(s) but %d arrived", nh, len(fr.pending))
	}
	if nh > 0 {
		f.handles = append([]sysHandle(nil), fr.pending[:nh]...)
		fr.pending = append(fr.pending[:0], fr.pending[nh:]...)
	}
	fr.r += frameHeaderLen
	body, owned, err := fr.readBody(n)
	if err != nil {
		closeHandles(f.handles)
		return frame{}, err
	}
	f.body, f.owned = body, owned
	return f, nil
}

// readBody reads a body of n bytes; owned says that it is not in the buffer.
func (fr *frameReader) readBody(n int) (body []byte, owned bool, err error) {
	if n > len(fr.buf) {
		// Too large for the buffer: read it into its own slice.
		body := make([]byte, n)
		got := copy(body, fr.buf[fr.r:fr.w])
		fr.r, fr.w = 0, 0
		for got < n {
			m, hs, err := fr.t.recv(body[got:])
			if err := fr.addPending(hs); err != nil {
				return nil, false, err
			}
			got += m
			if err != nil {
				return nil, false, truncated(err)
			}
		}
		return body, true, nil
	}
	for fr.w-fr.r < n {
		if err := fr.fill(); err != nil {
			return nil, false, truncated(err)
		}
	}
	body = fr.buf[fr.r : fr.r+n : fr.r+n]
	fr.r += n
	return body, false, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return protocolErrorf("channel closed in the middle of a frame")
	}
	return err
}

// buffered returns how many bytes the reader holds that next has not
// returned yet.
func (fr *frameReader) buffered() int { return fr.w - fr.r }

// fill reads more of the stream into the buffer.
func (fr *frameReader) fill() error {
	if fr.r > 0 {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	n, hs, err := fr.t.recv(fr.buf[fr.w:])
	fr.w += n
	if perr := fr.addPending(hs); perr != nil {
		return perr
	}
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.EOF
	}
	return err
}

func (fr *frameReader) addPending(hs []sysHandle) error {
	fr.pending = append(fr.pending, hs...)
	if len(fr.pending) > maxPendingHandles {
		return protocolErrorf("peer sent %d handles ahead of the frames that announce them", len(fr.pending))
	}
	return nil
}

// close releases the handles that arrived but were never claimed.
func (fr *frameReader) close() {
	closeHandles(fr.pending)
	fr.pending = nil
}

// isClosedErr reports whether err only says that the channel went away.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, ErrChannelClosed) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err)
}
