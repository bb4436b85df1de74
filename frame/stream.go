package frame

import "io"

const (
	// initialReadBuffer is the Reader's first buffer: enough for the short
	// requests and replies simple-ipc carries; it grows on demand.
	initialReadBuffer = 4 << 10

	// maxEmptyReads is how many (0, nil) results from an io.Reader or
	// io.Writer are tolerated in a row before giving up with
	// io.ErrNoProgress or io.ErrShortWrite, as bufio does.
	maxEmptyReads = 100
)

// Reader reads pkt-lines and messages from an io.Reader, for blocking
// clients. It reuses one buffer, which grows to at most MinReadBuffer bytes
// (plus the assembler's buffer for messages split over many packets), so the
// slices it returns are valid only until the next call to ReadPacket or
// ReadMessage.
//
// Errors are sticky: after a decoding error, a truncation or a read error,
// every later call returns the same error. A Reader is not safe for
// concurrent use; one goroutine calls its methods.
type Reader struct {
	rd   io.Reader
	buf  []byte
	r, w int   // unconsumed bytes are buf[r:w]
	off  int64 // stream offset of buf[r]
	eof  bool  // rd returned io.EOF
	asm  Assembler
	err  error
}

// NewReader returns a Reader over r. mode and maxSize configure ReadMessage
// as for NewAssembler (maxSize <= 0 means DefaultMaxMessageSize).
func NewReader(r io.Reader, mode Mode, maxSize int) *Reader {
	return &Reader{rd: r, asm: *NewAssembler(mode, maxSize)}
}

// ReadPacket reads the next packet. For Data, the payload aliases the
// Reader's buffer and is valid until the next ReadPacket or ReadMessage call;
// for control packets it is nil.
//
// At the end of the input it returns io.EOF if no byte of a packet was read,
// and an *Error wrapping io.ErrUnexpectedEOF otherwise. Decoding errors are
// *Error values with stream offsets.
func (r *Reader) ReadPacket() (Kind, []byte, error) {
	if r.err != nil {
		return NeedMore, nil, r.err
	}
	for {
		kind, payload, n, err := Decode(r.buf[r.r:r.w])
		if err != nil {
			if e, ok := err.(*Error); ok {
				e.Offset += r.off
			}
			r.err = err
			return NeedMore, nil, err
		}
		if kind != NeedMore {
			r.r += n
			r.off += int64(n)
			return kind, payload, nil
		}
		if r.eof {
			r.err = r.truncated()
			return NeedMore, nil, r.err
		}
		if err := r.fill(); err != nil {
			r.err = err
			return NeedMore, nil, err
		}
	}
}

// truncated is the EOF error for ReadPacket, given the unconsumed bytes.
func (r *Reader) truncated() error {
	rest := r.buf[r.r:r.w]
	if len(rest) == 0 {
		return io.EOF
	}
	v := -1
	if len(rest) >= HeaderSize {
		v = headerValue(rest)
	}
	return newError(io.ErrUnexpectedEOF, r.off, rest, v)
}

// ReadMessage reads the next whole message, assembled according to the
// Reader's mode. The message aliases the Reader's buffers and is valid until
// the next ReadPacket or ReadMessage call; copy it to keep it.
//
// It returns io.EOF only when the input ends cleanly before any byte of a
// message; an end inside a message is an *Error wrapping
// io.ErrUnexpectedEOF, and nothing of that message is returned.
func (r *Reader) ReadMessage() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	// Restart the assembler's stream offsets at this message, so that its
	// errors carry offsets in this Reader's stream even after ReadPacket
	// calls the assembler did not see.
	r.asm.Reset()
	r.asm.off = r.off
	for {
		msg, n, done, err := r.asm.Next(r.buf[r.r:r.w])
		r.r += n
		r.off += int64(n)
		switch {
		case err != nil:
			r.err = err
			return nil, err
		case done:
			return msg, nil
		case r.eof:
			r.err = r.asm.Truncated(r.w - r.r)
			return nil, r.err
		}
		if err := r.fill(); err != nil {
			r.err = err
			return nil, err
		}
	}
}

// fill reads at least one more byte into the buffer, or notes EOF. It makes
// room first: it moves the unconsumed bytes to the front, and grows the
// buffer when they fill it.
func (r *Reader) fill() error {
	if r.r > 0 && (r.r == r.w || r.w == len(r.buf)) {
		r.w = copy(r.buf, r.buf[r.r:r.w])
		r.r = 0
	}
	if r.w == len(r.buf) {
		size := min(max(2*len(r.buf), initialReadBuffer), MinReadBuffer)
		if size <= len(r.buf) {
			// Unreachable with Decode and the Assembler, which never need
			// more than MinReadBuffer bytes at once; a guard, not a loop.
			return errBufferFull
		}
		nb := make([]byte, size)
		r.w = copy(nb, r.buf[r.r:r.w])
		r.r = 0
		r.buf = nb
	}
	for range maxEmptyReads {
		n, err := r.rd.Read(r.buf[r.w:])
		if n < 0 || n > len(r.buf)-r.w {
			return errInvalidCount
		}
		r.w += n
		if err == io.EOF {
			r.eof = true
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
	return io.ErrNoProgress
}

// Writer writes whole messages to an io.Writer, for blocking clients. Each
// message is encoded into one reused buffer and handed to a single Write
// call; short writes are continued until the message is out. After a write
// error the stream is left inside a message, so the error is sticky. A
// Writer is not safe for concurrent use; one goroutine calls its methods.
type Writer struct {
	w   io.Writer
	buf []byte
	err error
}

// NewWriter returns a Writer over w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteMessage writes msg as data packets and a flush (see AppendMessage).
// msg is not retained.
func (w *Writer) WriteMessage(msg []byte) error {
	if w.err != nil {
		return w.err
	}
	w.buf = AppendMessage(w.buf[:0], msg)
	err := writeFull(w.w, w.buf)
	if cap(w.buf) > retainLimit {
		w.buf = nil
	}
	if err != nil {
		w.err = err
	}
	return err
}

// writeFull writes all of p, continuing after short writes.
func writeFull(w io.Writer, p []byte) error {
	empty := 0
	for len(p) > 0 {
		n, err := w.Write(p)
		if n < 0 || n > len(p) {
			return errInvalidCount
		}
		p = p[n:]
		if err != nil {
			return err
		}
		if n == 0 {
			if empty++; empty >= maxEmptyReads {
				return io.ErrShortWrite
			}
			continue
		}
		empty = 0
	}
	return nil
}
