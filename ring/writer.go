package ring

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Writer is the producing side of a ring. Its owner goroutine calls
// Reserve, Commit and Write; Close and SetDeadline may be called from any
// goroutine.
type Writer struct {
	s    *shared
	tail uint64 // end of this side's records; never read back from the mapping
	// published is the end of the records the reader may take: records
	// between it and tail are staged. The header of the first staged
	// record waits in hold, not in the mapping, so that the reader stops
	// there until publish stores it.
	published uint64
	hold      uint64
	head      uint64 // the reader's head as last read and checked
	// held is the payload capacity of the reservation handed out by
	// Reserve and not yet committed, or -1.
	held int
	mark bool   // Mark was called for the reservation held
	cont bool   // the last record finished said "more": the next continues its message
	need uint64 // bytes of free space the current wait is for
	err  error  // sticky: the ring is corrupt or a message was broken
	spin spinner
	dl   deadline
}

func newWriter(s *shared, opts *Options) (*Writer, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	w := &Writer{s: s, held: -1, spin: newSpinner(o.Spin)}
	// A writer starts where the reader is: at the start, in a new ring.
	w.head = s.head.Load()
	w.tail = w.head
	w.published = w.tail
	if w.head%recordHeader != 0 {
		return nil, &CorruptError{Field: "head", Value: w.head, At: w.head}
	}
	return w, nil
}

// SetDeadline sets the time after which a Reserve or Write waiting for
// space returns ErrTimeout; the zero time means none. Any goroutine may
// call it.
func (w *Writer) SetDeadline(t time.Time) {
	w.dl.set(t)
	w.s.rouse(w.s.wpark)
}

// MaxRecord is the largest payload one record may carry: half the data
// area less a record header.
func (w *Writer) MaxRecord() int { return maxRecord(w.s.capacity) }

// Reserve waits for room for a record of up to n bytes and returns the
// record's payload, a slice of the shared mapping to write in place. The
// slice stays valid until Commit or Close. n is at most MaxRecord.
//
// Reserve returns ErrTimeout at the deadline, ErrPeerClosed once the reader
// has closed, ErrClosed after Close, and a *CorruptError, for good, if the
// reader broke the ring's invariants.
func (w *Writer) Reserve(n int) ([]byte, error) {
	if w.held >= 0 {
		return nil, ErrInvalid
	}
	if n < 0 || n > w.MaxRecord() {
		return nil, ErrTooLarge
	}
	if !w.s.life.acquire() {
		return nil, ErrClosed
	}
	if err := w.reserve(uint64(n)); err != nil {
		w.s.release()
		return nil, err
	}
	w.held = n // the reference stays taken until Commit
	start := w.tail&w.s.mask + recordHeader
	return w.s.data[start : start+uint64(n) : start+uint64(n)], nil
}

// Mark marks the record reserved now: Commit or Stage writes the mark
// into its header, where the reader sees it (Reader.Marked). The ring
// gives the mark no meaning; its users agree on one. Without a
// reservation held it does nothing. The owner goroutine calls it.
func (w *Writer) Mark() {
	if w.held >= 0 {
		w.mark = true
	}
}

// Commit publishes the first n bytes of the reservation as a record,
// with any records staged before it; more says that the message continues
// in the next record. The reader is woken if it waits. After Close it
// publishes nothing, ends the reservation and returns ErrClosed. A Close
// from another goroutine while it publishes makes it return ErrClosed
// too, the record published: the reader may read it, or find the end
// first. A Commit that returned nil is read before io.EOF.
func (w *Writer) Commit(n int, more bool) error {
	if err := w.finish(n, more); err != nil {
		return err
	}
	w.publish()
	// Close closes life before it marks the side closed in the shared
	// header: life still open after the record's fenced publishing store
	// means that the mark comes after the record, which the reader then
	// reads before io.EOF.
	if w.s.life.isClosed() {
		w.s.release()
		return ErrClosed
	}
	w.prefetch(recordSize(uint64(n)))
	w.s.release()
	return nil
}

// prefetch asks for the cache lines where a next record of size bytes
// would go, where they are free, so that they come to this side's cache
// while the owner does other things (waits for a reply, say), rather than
// one after the other, with the writer waiting, when it writes the
// record. It leaves out the line that the record just published ends in,
// which the reader is about to read.
func (w *Writer) prefetch(size uint64) {
	if start, end, ok := w.prefetchRange(size); ok {
		prefetchWrite(&w.s.data[start], uintptr(end-start))
	}
}

// prefetchRange is the part of the data area, from start to end, that
// prefetch asks for, if any.
func (w *Writer) prefetchRange(size uint64) (start, end uint64, ok bool) {
	if size < prefetchMin || size > prefetchMax {
		return 0, 0, false
	}
	off := w.tail & w.s.mask
	start, end, need := (off+63)&^63, off+size, size
	if size > w.s.capacity-off {
		start, end, need = 0, size, size+w.s.capacity-off // after padding
	}
	if w.s.capacity-(w.tail-w.head) < need || end <= start {
		return 0, 0, false
	}
	return start, end, true
}

// Records that prefetch asks lines for: from a few lines, below which the
// writer's stores wait for little, to 64 KiB, above which Go's copy does
// not go through the caches the lines would be fetched into.
const (
	prefetchMin = 256
	prefetchMax = 64 << 10
)

// Stage ends the reservation as a record, like Commit, but leaves it
// unpublished: records staged one after another reach the reader together
// at the next Commit or Flush, for one publishing store and at most one
// wake-up instead of one each. Reserve flushes by itself before it waits
// for room; Close does not, so staged records not flushed are lost. The
// owner goroutine calls it.
func (w *Writer) Stage(n int, more bool) error {
	if err := w.finish(n, more); err != nil {
		return err
	}
	w.s.release()
	return nil
}

// Flush publishes the staged records, if any, and asks for the lines a
// next run of records of the same size would take (see prefetch): a
// writer that batches (StageRecords) then finds them in its cache. The
// owner goroutine calls it.
func (w *Writer) Flush() {
	if w.published != w.tail && w.s.life.acquire() {
		span := w.tail - w.published
		w.publish()
		w.prefetch(span)
		w.s.release()
	}
}

// finish writes the reservation's record header and moves the tail past
// the record, without publishing it.
func (w *Writer) finish(n int, more bool) error {
	if w.held < 0 || n < 0 || n > w.held {
		return ErrInvalid
	}
	if w.s.life.isClosed() {
		// Closed while the record was reserved: the record is dropped
		// unpublished, so that no reader takes the last record of a
		// message its writer abandoned for a whole message.
		w.held, w.mark = -1, false
		w.s.release()
		return ErrClosed
	}
	var flags uint32
	if more {
		flags = flagMore
	}
	w.cont = more
	if w.mark {
		flags |= flagMark
		w.mark = false
	}
	w.header(packRecord(uint32(n), flags|seal(w.tail, w.s.shift)))
	w.tail += recordSize(uint64(n))
	w.held = -1
	return nil
}

// header writes the sealed header of the record at the tail: into the
// mapping, or, for the first record not yet published, into hold, for
// publish. A plain store: the reader takes no record past the first
// unpublished one, whose header publish stores last.
func (w *Writer) header(h uint64) {
	if w.tail == w.published {
		w.hold = h
		return
	}
	binary.LittleEndian.PutUint64(w.s.data[w.tail&w.s.mask:], h)
}

// publish hands the staged records to the reader and wakes it if it
// waits: it clears the word after the last of them, where the reader
// looks next, unless the ring is full (see seal), and then stores the
// header of the first.
func (w *Writer) publish() {
	if w.tail-w.head < w.s.capacity {
		binary.LittleEndian.PutUint64(w.s.data[w.tail&w.s.mask:], 0)
	}
	publishIndex(word64(w.s.data, w.published&w.s.mask), w.hold)
	w.published = w.tail
	w.s.wake(w.s.rpark)
}

// Taken reports whether the reader has given back every record published
// so far, as far as the shared header says: with a reader that gives a
// record back once it is done with it, it has finished with them all. It
// reports false once the side is closed or the ring is corrupt. The owner
// goroutine calls it.
func (w *Writer) Taken() bool {
	if w.err != nil || !w.s.life.acquire() {
		return false
	}
	defer w.s.release()
	return w.s.head.Load() == w.published
}

// Published returns the ring position just past the last record published:
// the position to give TakenTo later. The owner goroutine calls it.
func (w *Writer) Published() uint64 { return w.published }

// TakenTo reports whether the reader has given back every record before
// pos, a position from Published, as far as the shared header says; like
// Taken, it reports false once the side is closed or the ring is corrupt.
// The owner goroutine calls it.
func (w *Writer) TakenTo(pos uint64) bool {
	if w.err != nil || !w.s.life.acquire() {
		return false
	}
	defer w.s.release()
	return int64(w.s.head.Load()-pos) >= 0
}

// Write sends p as one message, copying it into the ring in records of at
// most a quarter of the data area, so that the reader can drain one while
// the next is written. A deadline that passes after the first record
// breaks the stream (ErrBrokenMessage): the writer closes its side.
func (w *Writer) Write(p []byte) error {
	piece := int(w.s.capacity/4) - recordHeader
	first := true
	for first || len(p) > 0 {
		n := min(len(p), piece)
		b, err := w.Reserve(n)
		if err != nil {
			if !first && err != ErrClosed {
				return w.breakStream(err)
			}
			return err
		}
		copy(b, p[:n])
		p = p[n:]
		if err := w.Commit(n, len(p) > 0); err != nil {
			// Closed under the reservation: the record was dropped, and
			// with it the message.
			return err
		}
		first = false
	}
	return nil
}

// Close ends the writer's side: the reader reads every record whose Commit
// returned nil and then io.EOF, a waiting call returns ErrClosed, and the
// mapping is released once no call is in progress and no reservation is
// held. Any goroutine may call it; a second call returns ErrClosed.
func (w *Writer) Close() error {
	if !w.s.close(closedWriter) {
		return ErrClosed
	}
	return nil
}

// reserve waits until a record of n payload bytes fits after the tail,
// and writes a padding record first if it would cross the end of the data
// area.
func (w *Writer) reserve(n uint64) error {
	for {
		ok, err := w.place(n)
		if err != nil || ok {
			return err
		}
		// The reader cannot make room for records it has not seen.
		if w.published != w.tail {
			w.publish()
		}
		if err := wait(w, w.s.wpark, &w.spin, &w.dl); err != nil {
			return err
		}
	}
}

// place readies the tail for a record of n payload bytes when the head
// leaves room for it, writing a padding record first where the record
// would cross the end of the data area, and reports whether it did. It
// never waits.
func (w *Writer) place(n uint64) (bool, error) {
	if w.err != nil {
		return false, w.err
	}
	size, off, toEnd := w.setNeed(n)
	if w.s.closed.Load()&closedReader != 0 {
		return false, ErrPeerClosed
	}
	// The head last read is enough most of the time; reading the reader's
	// cache line only when it is not keeps the line where the reader is.
	if !w.roomKnown() {
		if ok, err := w.ready(); err != nil || !ok {
			return false, err
		}
	}
	if size > toEnd || w.rewind(size, off) {
		w.header(packRecord(0, flagPad|seal(w.tail, w.s.shift)))
		w.tail += toEnd
	}
	return true, nil
}

// rewind reports whether a record of size bytes, due at offset off, should
// go to the start of the data area instead, after a padding record: when
// it is large (rewindMin) and begins a message, nothing is staged, and the
// reader has given back every record, so that the padding and the record
// do not overlap (off >= size) and both fit. A ring that carries large
// messages one at a time (requests and replies of a round trip) then
// reuses the same pages for each, rather than a new part of a mapping
// several times the message: with many such rings, a smaller set of pages
// in use makes each copy cheaper.
func (w *Writer) rewind(size, off uint64) bool {
	if off < size || size < rewindMin || w.cont || w.published != w.tail {
		return false
	}
	if h := w.s.head.Load(); h == w.tail {
		w.head = h
		return true
	}
	return false
}

// rewindMin is the smallest record that rewinds: one of a mebibyte. Copies
// that large go past the caches (Go's copy switches to non-temporal stores
// there on amd64), and for them the smaller set of pages pays. A smaller
// record is copied through the caches, where writing it over the lines the
// reader has just read makes the two sides pass those lines back and
// forth: rewinding records of 64 KiB made 64 clients slower. Nor do the
// later records of a message rewind, for the same reason: their reader is
// still copying out the records before them. A variable so that the
// stress tests can rewind small records.
var rewindMin = recordSize(1 << 20)

// setNeed sets w.need for a record of n payload bytes: its size, and the
// rest of the data area before it if it does not fit there.
func (w *Writer) setNeed(n uint64) (size, off, toEnd uint64) {
	size = recordSize(n)
	off = w.tail & w.s.mask
	toEnd = w.s.capacity - off
	w.need = size
	if size > toEnd {
		w.need = toEnd + size
	}
	return size, off, toEnd
}

// Spin waits for Reserve(n) to have room, by spinning for at most the
// side's adaptive spin (Options.Spin), without parking and without
// arming; it reports whether Reserve(n) would now return at once. Staged
// records are published first: the reader cannot make room for records it
// has not seen. The owner goroutine calls it.
func (w *Writer) Spin(n int) bool { return w.roomFor(n, roomSpin, 0) }

// How roomFor learns whether there is room.
const (
	roomLook  = iota // read the reader's head once (Ready)
	roomSpin         // spin (Spin)
	roomSleep        // sleep on the futex (Sleep)
	roomArm          // arm the doorbell (Arm)
)

// roomFor is Ready, Spin, Sleep (for up to d) and Arm: whether
// Reserve(n) would return at once, known without looking at the reader's
// head, or learnt as how says. Staged records are published before a
// spin or a sleep: the reader cannot make room for records it has not
// seen (arm publishes them itself).
func (w *Writer) roomFor(n int, how int, d time.Duration) bool {
	if w.held >= 0 || n < 0 || n > w.MaxRecord() {
		return true
	}
	// Room known from the head last read is this side's own state: no
	// reference to the mapping, and no atomic instruction, for the
	// common case.
	w.setNeed(uint64(n))
	if w.roomKnown() || !w.s.life.acquire() {
		return true
	}
	defer w.s.release()
	switch how {
	case roomLook:
		ok, err := w.ready()
		return ok || err != nil
	case roomArm:
		return w.arm()
	}
	if w.published != w.tail {
		w.publish()
	}
	if how == roomSleep {
		return sleep(w, w.s.wpark, d)
	}
	return spinOnly(w, &w.spin)
}

// roomKnown reports whether the head last read leaves room for w.need
// bytes: then Reserve returns at once without reading the reader's cache
// line, which stays where the reader is.
func (w *Writer) roomKnown() bool {
	return w.err == nil && w.s.capacity-(w.tail-w.head) >= w.need
}

// Ready reports whether Reserve(n) would return at once, with room or an
// error, without waiting and without arming: the check an owner makes
// before it spins or arms. The owner goroutine calls it.
func (w *Writer) Ready(n int) bool { return w.roomFor(n, roomLook, 0) }

// Arm reports whether Reserve(n) would return at once, with room or an
// error. If not, it asks the reader to ring this side's doorbell when it
// next releases a record (or closes) and reports false: the owner then
// waits until the doorbell's other end is readable, drains it, and calls
// Arm again. The owner goroutine calls it.
func (w *Writer) Arm(n int) bool { return w.roomFor(n, roomArm, 0) }

// arm raises the writer's parking word for the doorbell unless there is
// room after all; on the owner's reference.
func (w *Writer) arm() bool {
	for armed := false; ; armed = true {
		if ok, err := w.ready(); ok || err != nil {
			if armed {
				w.s.wpark.CompareAndSwap(parkedBell, 0)
			}
			return true
		}
		if armed {
			return false
		}
		if w.published != w.tail {
			w.publish() // the reader cannot make room for unseen records
		}
		w.s.wpark.Store(parkedBell)
	}
}

// ready is the writer's wait condition: w.need bytes free, or a reason to
// stop.
func (w *Writer) ready() (bool, error) {
	if w.err != nil {
		return false, w.err
	}
	h := w.s.head.Load()
	if w.tail-h > w.s.capacity || h-w.head > w.s.capacity {
		// Past the tail, or moved by more than a whole ring.
		w.err = &CorruptError{Field: "head", Value: h, At: w.tail}
		w.s.markClosed(closedWriter)
		w.s.wake(w.s.rpark)
		return false, w.err
	}
	w.head = h
	if w.s.life.isClosed() {
		return false, ErrClosed
	}
	if w.s.closed.Load()&closedReader != 0 {
		return false, ErrPeerClosed
	}
	return w.s.capacity-(w.tail-h) >= w.need, nil
}

// breakStream ends the stream after a message was cut short by err: the
// reader must not join its first records to the next message.
func (w *Writer) breakStream(err error) error {
	if w.err == nil {
		w.err = fmt.Errorf("%w: %w", ErrBrokenMessage, err)
	}
	if w.s.life.acquire() {
		w.s.markClosed(closedWriter)
		w.s.wake(w.s.rpark)
		w.s.release()
	}
	return w.err
}
