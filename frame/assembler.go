package frame

import (
	"io"
	"math/bits"
	"strconv"
)

// Mode selects how an Assembler ends a message.
type Mode uint8

// Assembler modes.
const (
	// SimpleIPC is git's simple-ipc reader: a message ends at the first
	// zero-length packet, be it 0000, 0001, 0002 or 0004.
	SimpleIPC Mode = iota
	// Persistent is pktipc's multi-request connection: only 0000 ends a
	// message; 0004 is an empty data packet that adds nothing; 0001 and 0002
	// are protocol errors (ErrUnexpectedPacket).
	Persistent
)

// String names the mode.
func (m Mode) String() string {
	switch m {
	case SimpleIPC:
		return "simple-ipc"
	case Persistent:
		return "persistent"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

const (
	// AbsorbThreshold is how many bytes of complete data packets an
	// Assembler leaves in the caller's buffer before it copies them into its
	// own (absorbs them). Two maximal packets: a message of one packet, or
	// of a few small ones that arrive in pieces, stays zero-copy, while a
	// caller never has to hold more than this plus one packet of a huge
	// message.
	AbsorbThreshold = 2 * MaxPacketSize

	// MinReadBuffer is the smallest buffer with which Next always makes
	// progress: AbsorbThreshold bytes of complete packets plus one whole
	// packet that has not been validated yet.
	MinReadBuffer = AbsorbThreshold + MaxPacketSize

	// retainLimit bounds the buffer an Assembler keeps between messages: a
	// connection that once carried a 16 MiB message should not pin 16 MiB
	// for its lifetime. Steady traffic of messages below it reuses the
	// buffer without allocating.
	retainLimit = 4 << 20

	// minGrow is the smallest allocation of the assembly buffer, so that a
	// run of small multi-packet messages does not regrow it byte by byte.
	minGrow = 4 << 10

	// sourceKeep is the largest buffer from a BufferSource an Assembler keeps
	// between messages; larger ones go back to the source, where other
	// connections can use them.
	sourceKeep = 64 << 10
)

// A BufferSource lends an Assembler the buffers in which it gathers
// messages that span packets, so that their owner (a server) can bound the
// bytes all its connections buffer and reuse large buffers between them.
// An Assembler without a source allocates with make.
type BufferSource interface {
	// Get returns a buffer of length 0 and capacity at least n, or nil to
	// refuse it: the message then fails with ErrNoBuffer.
	Get(n int) []byte
	// Put takes back a buffer that Get returned, when the Assembler has no
	// more use for it.
	Put(b []byte)
}

// Assembler reassembles messages from pkt-lines held in a caller's buffer,
// decoding in place. The caller owns the buffer: it passes its unconsumed
// bytes to Next, discards the n bytes Next reports, appends newly read bytes
// after the rest, and calls Next again.
//
// An Assembler is not safe for concurrent use: one goroutine (the
// connection's reader or event loop) calls all its methods.
type Assembler struct {
	mode Mode
	max  int
	src  BufferSource // nil: make

	buf []byte // payload absorbed for the pending message (or the last one delivered)
	off int64  // stream offset of the caller's b[0]: bytes consumed since NewAssembler or Reset

	// Scan state over b, so that a call after "need more" resumes where the
	// previous one stopped: b[:scanned] is complete, validated data packets.
	scanned  int
	total    int   // payload bytes of the pending message: len(buf) plus those in b[:scanned]
	npkt     int   // non-empty data packets in b[:scanned]
	first    int   // offset in b of the first such packet's payload
	absorbed int64 // stream bytes absorbed for the pending message

	// The incomplete packet at b[scanned:] when the last Next asked for more,
	// for Truncated.
	tail    [HeaderSize]byte
	tailLen int // header bytes present, 0..4
	tailVal int // declared length, or -1

	// A data packet whose header and first payload bytes were absorbed:
	// rest payload bytes of it come first in the caller's next b; its
	// header is in tail, at stream offset restOff.
	rest    int
	restOff int64

	delivered bool  // a message was returned; per-message state is stale
	err       error // sticky: the stream is dead

	// Plan's layout: the pieces it lent, the header slots of the packets
	// it foresaw, and Filled's spill buffer.
	plan  [][]byte
	slots []byte
	spill []byte
}

// NewAssembler returns an Assembler for mode with a total-size cap of maxSize
// payload bytes per message; maxSize <= 0 means DefaultMaxMessageSize.
func NewAssembler(mode Mode, maxSize int) *Assembler {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	return &Assembler{mode: mode, max: maxSize, tailVal: -1}
}

// SetBufferSource makes the Assembler take its gathering buffers from src
// (nil: make). Call it before the first Next.
func (a *Assembler) SetBufferSource(src BufferSource) { a.src = src }

// Held returns the capacity of the gathering buffer the Assembler holds.
func (a *Assembler) Held() int { return cap(a.buf) }

// Release gives the gathering buffer back to the BufferSource (or to the
// garbage collector), with any partial message; a message returned earlier
// that aliases it stops being valid. The Assembler stays usable.
func (a *Assembler) Release() {
	a.putBuf()
	a.startMessage()
	a.plan, a.slots, a.spill = nil, nil, nil
}

func (a *Assembler) putBuf() {
	if a.src != nil && cap(a.buf) > 0 {
		a.src.Put(a.buf[:0])
	}
	a.buf = nil
}

// Detach hands the caller the gathering buffer when the message Next just
// delivered lies in it (the message spanned packets): the message then
// stays valid for as long as the caller keeps the buffer, and the next
// message is gathered in a new one. It returns nil when the message does
// not lie in the buffer. A buffer from a BufferSource is the caller's to
// give back.
func (a *Assembler) Detach() []byte {
	if !a.delivered || len(a.buf) == 0 {
		return nil
	}
	b := a.buf
	a.buf = nil
	return b
}

// Reset forgets any partial message and any error, and restarts stream
// offsets at 0 (for a new connection). The buffer is kept for reuse unless it
// grew past a few MiB, or past 64 KiB when it came from a BufferSource, which
// gets it back. A message returned earlier may alias the buffer and stops
// being valid.
func (a *Assembler) Reset() {
	a.startMessage()
	a.off = 0
	a.err = nil
}

// startMessage clears the per-message state.
func (a *Assembler) startMessage() {
	if cap(a.buf) > retainLimit || (a.src != nil && cap(a.buf) > sourceKeep) {
		a.putBuf()
	}
	a.buf = a.buf[:0]
	clear(a.plan) // no stale views of a buffer given back
	if cap(a.spill) > sourceKeep {
		a.spill = nil
	}
	a.scanned, a.total, a.npkt, a.first, a.absorbed = 0, 0, 0, 0, 0
	a.tailLen, a.tailVal, a.rest = 0, -1, 0
	a.delivered = false
}

// Buffered returns how many payload bytes of the pending message the
// Assembler has absorbed into its own buffer so far.
func (a *Assembler) Buffered() int {
	if a.delivered {
		return 0
	}
	return len(a.buf)
}

// Direct returns where the rest of a data packet's payload goes when the
// Assembler has absorbed its header and first bytes and the caller holds
// no unconsumed input: a caller may read its next input straight into the
// slice and report how much it read with Fill, and the payload is then
// copied once, by the kernel, instead of through the caller's buffer. It
// returns nil when no such packet is pending. The slice is valid until
// the next call of any other method.
func (a *Assembler) Direct() []byte {
	if a.rest == 0 || a.err != nil || a.delivered {
		return nil
	}
	return a.buf[len(a.buf) : len(a.buf)+a.rest]
}

// Fill records that the first n bytes of the slice Direct returned hold
// the next n bytes of input. n must be within that slice.
func (a *Assembler) Fill(n int) {
	if n < 0 || n > a.rest || a.delivered || a.err != nil {
		panic("frame: Fill beyond the slice Direct returned")
	}
	a.buf = a.buf[:len(a.buf)+n]
	a.rest -= n
	a.off += int64(n)
	a.absorbed += int64(n)
	if a.rest == 0 {
		a.tailLen, a.tailVal = 0, -1 // the packet is whole: nothing is cut
	}
}

// Plan is Direct for more than the rest of one packet: while the
// Assembler gathers a large message and the caller holds no unconsumed
// input, it returns the pieces into which the caller may read its next
// input, in order: the rest of the pending packet's payload (if any), then
// for up to packets more packets a 4-byte header slot and the payload's
// place in the message's buffer, laid out as if each were a full packet
// (as pkt-line writers send all but a message's last). Only packets that
// fit the buffer and the size cap are foreseen. The caller reads into the
// pieces (readv) and reports with Filled how many bytes it read into them.
// Plan returns nil when nothing can be read this way. The pieces are valid
// until the next call of any other method.
func (a *Assembler) Plan(packets int) [][]byte {
	if a.err != nil || a.delivered || a.absorbed == 0 || a.scanned != 0 {
		return nil
	}
	a.plan = a.plan[:0]
	end := len(a.buf)
	if a.rest > 0 {
		a.plan = append(a.plan, a.buf[end:end+a.rest])
		end += a.rest
	}
	room := min(cap(a.buf)-end, a.max-a.total)
	k := max(0, min(packets, room/MaxPayloadSize))
	if need := k * HeaderSize; cap(a.slots) < need {
		a.slots = make([]byte, need)
	}
	a.slots = a.slots[:k*HeaderSize]
	for i := range k {
		a.plan = append(a.plan, a.slots[i*HeaderSize:(i+1)*HeaderSize], a.buf[end:end+MaxPayloadSize])
		end += MaxPayloadSize
	}
	if len(a.plan) == 0 {
		return nil
	}
	return a.plan
}

// Filled records that the first n bytes of the pieces Plan returned hold
// the next n bytes of input. The payloads of full packets stay where they
// were read; from the first header that is not a full packet's on (a
// message's last packet, a terminator, a bad header), the bytes are not
// the Assembler's to place: Filled returns them, and the caller must put
// them at the front of its input, before what it read after the pieces.
// The returned slice is valid until the next call of any other method.
func (a *Assembler) Filled(n int) (spill []byte) {
	if n < 0 || a.err != nil || a.delivered {
		panic("frame: Filled without a Plan")
	}
	i := 0
	if a.rest > 0 {
		k := min(n, a.rest)
		a.Fill(k)
		n -= k
		i = 1
		if a.rest > 0 {
			if n > 0 {
				panic("frame: Filled beyond the pieces Plan returned")
			}
			return nil
		}
	}
	for ; i+1 < len(a.plan) && n > 0; i += 2 {
		h := a.plan[i]
		if n < HeaderSize || headerValue(h) != MaxPacketSize || a.max-a.total < MaxPayloadSize {
			break // the input goes on as the caller's
		}
		k := min(n-HeaderSize, MaxPayloadSize)
		a.total += MaxPayloadSize
		a.buf = a.buf[:len(a.buf)+k]
		n -= HeaderSize + k
		if k < MaxPayloadSize {
			a.rest = MaxPayloadSize - k
			a.restOff = a.off
			a.tailLen = copy(a.tail[:], h)
			a.tailVal = MaxPacketSize
		}
		a.off += int64(HeaderSize + k)
		a.absorbed += int64(HeaderSize + k)
		if a.rest > 0 {
			if n > 0 {
				panic("frame: Filled beyond the pieces Plan returned")
			}
			return nil
		}
	}
	a.spill = a.spill[:0]
	for ; i < len(a.plan) && n > 0; i++ {
		k := min(n, len(a.plan[i]))
		a.spill = append(a.spill, a.plan[i][:k]...)
		n -= k
	}
	if n > 0 {
		panic("frame: Filled beyond the pieces Plan returned")
	}
	return a.spill
}

// Next scans b, the caller's unconsumed input, for the end of the current
// message. b must start where the previous call's consumed bytes ended, and
// when the previous call asked for more input without consuming, b must begin
// with the same bytes as before (the Assembler resumes its scan there, so
// rescanning costs only the new bytes).
//
// done == true: msg is the whole message (length 0 for an empty message) and
// n is the number of bytes to consume, through the terminating packet; bytes
// after it are not examined. If the message's payload lies in at most one
// data packet and nothing of it was absorbed before, msg aliases b (capacity
// limited to its length) and is valid as long as those bytes are. Otherwise
// msg aliases the Assembler's buffer and is valid until the next call to Next
// or Reset. Copy it to keep it.
//
// done == false, err == nil: the message is not complete. If n > 0 the
// Assembler absorbed n bytes of complete data packets (it copied their
// payload into its buffer, which happens once more than AbsorbThreshold bytes
// wait in b, and then for every complete packet of the same message); the
// caller must discard them before calling again with the rest and the new
// input. A caller whose buffer holds MinReadBuffer bytes always
// makes progress.
//
// err != nil: an *Error with Offset counted in stream bytes since NewAssembler
// or Reset; nothing of the message is delivered and the stream is dead:
// every later call returns the same error until Reset. The size cap is
// checked from each header, before the packet's payload is waited for or any
// memory grown.
func (a *Assembler) Next(b []byte) (msg []byte, n int, done bool, err error) {
	if a.err != nil {
		return nil, 0, false, a.err
	}
	if a.delivered {
		a.startMessage()
	}
	if a.rest > 0 {
		// The payload of a packet absorbed in part goes on here.
		k := min(a.rest, len(b))
		a.buf = append(a.buf, b[:k]...)
		a.rest -= k
		a.off += int64(k)
		a.absorbed += int64(k)
		if a.rest == 0 {
			a.tailLen, a.tailVal = 0, -1 // the packet is whole: nothing is cut
		}
		if a.rest > 0 || k == len(b) {
			return nil, k, false, nil
		}
		msg, n, done, err := a.Next(b[k:]) // packets follow
		if err != nil {
			return nil, 0, false, err
		}
		return msg, k + n, done, nil
	}
	pos := a.scanned
	if pos > len(b) {
		// The caller broke the contract and shortened its buffer; the scan
		// state is meaningless, so start over on what it holds now.
		pos, a.scanned, a.npkt, a.total = 0, 0, 0, len(a.buf)
	}
	for len(b)-pos >= HeaderSize {
		v := headerValue(b[pos:])
		switch {
		case v > HeaderSize:
			if v > MaxPacketSize {
				return a.fail(ErrTooLong, b, pos, v)
			}
			plen := v - HeaderSize
			if plen > a.max-a.total {
				return a.fail(ErrTooLarge, b, pos, v)
			}
			if len(b)-pos < v {
				return a.needMore(b, pos, v)
			}
			if a.npkt == 0 {
				a.first = pos + HeaderSize
			}
			a.npkt++
			a.total += plen
			pos += v
			continue
		case v == HeaderSize && a.mode == Persistent:
			pos += HeaderSize // an empty data packet: nothing to add
			continue
		case v == HeaderSize, v == flushValue:
		case v == delimValue, v == responseEndValue:
			if a.mode == Persistent {
				return a.fail(ErrUnexpectedPacket, b, pos, v)
			}
		case v == badValue:
			return a.fail(ErrBadLength, b, pos, v)
		default:
			return a.fail(ErrBadHeader, b, pos, -1)
		}
		// A terminator at pos.
		n = pos + HeaderSize
		switch {
		case len(a.buf) > 0 || a.npkt > 1:
			if !a.gather(b[:pos]) {
				return a.fail(ErrNoBuffer, b, pos, v)
			}
			msg = a.buf[:len(a.buf):len(a.buf)]
		case a.npkt == 1:
			msg = b[a.first : a.first+a.total : a.first+a.total]
		default:
			msg = b[:0:0]
		}
		a.off += int64(n)
		a.delivered = true
		return msg, n, true, nil
	}
	return a.needMore(b, pos, -1)
}

// needMore records where the scan stopped and absorbs the complete packets
// if enough of them wait in b. Once the message is being gathered it
// absorbs everything it can, the payload of an incomplete data packet
// included (leaving bytes in b would save no copy, and would hold the
// caller's memory): the caller then holds at most an incomplete header.
func (a *Assembler) needMore(b []byte, pos, v int) ([]byte, int, bool, error) {
	a.scanned = pos
	a.tailLen = copy(a.tail[:], b[pos:])
	a.tailVal = v
	gathering := a.absorbed > 0 || pos >= AbsorbThreshold
	part := gathering && v > HeaderSize // the header of an incomplete data packet
	if !gathering || (pos == 0 && !part) {
		// Nothing to absorb yet. (A run of empty packets, which
		// Persistent mode skips, is absorbed like data packets: the
		// caller's buffer must not fill with them.)
		return nil, 0, false, nil
	}
	if part {
		plen := v - HeaderSize
		a.total += plen // within the cap: checked at its header
		if !a.gather(b[:pos]) {
			return a.fail(ErrNoBuffer, b, pos, v)
		}
		a.buf = append(a.buf, b[pos+HeaderSize:]...)
		a.rest = plen - (len(b) - pos - HeaderSize)
		a.restOff = a.off + int64(pos)
		n := len(b)
		a.off += int64(n)
		a.absorbed += int64(n)
		a.scanned, a.npkt = 0, 0
		return nil, n, false, nil
	}
	if !a.gather(b[:pos]) {
		return a.fail(ErrNoBuffer, b, pos, v)
	}
	a.off += int64(pos)
	a.absorbed += int64(pos)
	a.scanned, a.npkt = 0, 0
	return nil, pos, false, nil
}

// gather appends the payloads of the validated data packets in p to a.buf.
// a.total already counts them and is within the cap, so the buffer grows at
// most once, never past the cap. It reports false when the BufferSource
// refused a larger buffer.
func (a *Assembler) gather(p []byte) bool {
	if cap(a.buf) < a.total {
		// Powers of two: a run of equal messages settles on one size, the
		// one a BufferSource's classes hand out anyway. In 64 bits: past
		// 1 GiB, a 32-bit int would overflow.
		want := max(2*uint64(cap(a.buf)), uint64(a.total), minGrow)
		c := a.max
		if p := uint64(1) << bits.Len64(want-1); p < uint64(a.max) {
			c = int(p)
		}
		var nb []byte
		if a.src == nil {
			nb = make([]byte, 0, c)
		} else if nb = a.src.Get(c); nb == nil {
			return false
		}
		nb = append(nb[:0], a.buf...)
		a.putBuf()
		a.buf = nb
	}
	for len(p) >= HeaderSize {
		v := headerValue(p)
		a.buf = append(a.buf, p[HeaderSize:v]...)
		p = p[v:]
	}
	return true
}

// fail makes the stream dead with an *Error for the packet at b[pos:].
func (a *Assembler) fail(err error, b []byte, pos, v int) ([]byte, int, bool, error) {
	e := newError(err, a.off+int64(pos), b[pos:], v)
	a.err = e
	return nil, 0, false, e
}

// Truncated returns the error to report when the input ends (EOF) while the
// caller still holds buffered unconsumed bytes, after Next has seen them all
// and asked for more:
//
//   - io.EOF when buffered == 0 and nothing of a pending message was
//     absorbed: the stream ended cleanly between messages;
//   - otherwise an *Error wrapping io.ErrUnexpectedEOF whose Offset is where
//     the incomplete packet (or the missing terminator) starts, with the
//     header bytes and declared length that Next saw there;
//   - the stream's error if it already failed.
//
// Nothing of a truncated message is ever delivered.
func (a *Assembler) Truncated(buffered int) error {
	if a.err != nil {
		return a.err
	}
	if a.delivered {
		if buffered == 0 {
			return io.EOF
		}
		return &Error{Err: io.ErrUnexpectedEOF, Offset: a.off, Length: -1}
	}
	if buffered == 0 && a.absorbed == 0 {
		return io.EOF
	}
	if a.rest > 0 {
		e := &Error{Err: io.ErrUnexpectedEOF, Offset: a.restOff, Length: a.tailVal}
		copy(e.Header[:], a.tail[:a.tailLen])
		return e
	}
	e := &Error{Err: io.ErrUnexpectedEOF, Offset: a.off + int64(min(a.scanned, max(buffered, 0))), Length: a.tailVal}
	copy(e.Header[:], a.tail[:a.tailLen])
	return e
}
