package ring

import (
	"io"
	"os"
	"time"
)

// Reader is the consuming side of a ring. Its owner goroutine calls Next,
// Release and ReadMessage; Close and SetDeadline may be called from any
// goroutine.
type Reader struct {
	s    *shared
	head uint64 // position of the next record; never read back from the mapping
	// lease is the size of the record handed out by Next and not yet
	// released, or zero.
	lease uint64
	// marked says whether the record Next returned last carried the
	// writer's mark.
	marked bool
	// partial is set while a message's records are being skipped after a
	// ReadMessage that failed in its middle.
	partial bool
	// held says that the mapping is pinned by Hold: Ready takes no
	// reference of its own.
	held bool
	// prefetch: a wait that ends with a record asks for its lines
	// (Options.Prefetch).
	prefetch bool
	err      error // sticky: the ring is corrupt
	spin     spinner
	dl       deadline
}

// Options tunes a side of a ring.
type Options struct {
	// Spin is the longest a side spins, looking again for the peer's work,
	// before it parks: zero means DefaultSpin, negative never spins. The
	// side adapts within it.
	Spin time.Duration

	// Doorbell is how this side wakes a peer that waits on a doorbell
	// (see Arm) instead of the futex: the ringing end of a pair made by
	// NewDoorbell, whose other end the peer's owner watches. Any number of
	// rings may share one doorbell. The side keeps its own duplicate, so
	// the caller may close this one. Nil: a peer waiting on a doorbell is
	// never woken, so both owners must agree on it.
	Doorbell *os.File

	// Prefetch makes a Reader's Spin, SpinNext and Sleep, when they end
	// with a record at the head, ask for the record's next cache lines
	// (up to 512 bytes of them) before they return: for an owner that
	// reads every record it waited for, after some bookkeeping of its own,
	// the lines travel from the writer's processor during that bookkeeping
	// rather than one after the other when it reads them. An owner that
	// may leave a record unread (a reply it hands on without looking)
	// should not set it: the lines would travel for nothing, and the
	// writer would have to take them back. Writers ignore it.
	Prefetch bool
}

func newReader(s *shared, opts *Options) (*Reader, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	r := &Reader{s: s, spin: newSpinner(o.Spin), prefetch: o.Prefetch}
	r.head = s.head.Load()
	if r.head%recordHeader != 0 {
		// Records start on eight-byte boundaries, and their headers are
		// read as aligned words.
		return nil, &CorruptError{Field: "head", Value: r.head, At: r.head}
	}
	return r, nil
}

// SetDeadline sets the time after which a waiting Next or ReadMessage
// returns ErrTimeout; the zero time means none. Any goroutine may call it.
func (r *Reader) SetDeadline(t time.Time) {
	r.dl.set(t)
	r.s.rouse(r.s.rpark)
}

// MaxRecord is the largest payload one record may carry.
func (r *Reader) MaxRecord() int { return maxRecord(r.s.capacity) }

// Next waits for the next record and returns its payload, a slice of the
// shared mapping that stays valid until Release or Close, and whether the
// message continues in the following record. The peer can still write to
// the slice; copy it before parsing it if the peer is not trusted.
//
// Next returns io.EOF once the writer has closed and every record has been
// read, ErrTimeout at the deadline, ErrClosed after Close, and a
// *CorruptError, for good, if the writer broke the ring's invariants.
func (r *Reader) Next() (p []byte, more bool, err error) {
	if r.lease != 0 {
		return nil, false, ErrInvalid
	}
	if !r.s.life.acquire() {
		return nil, false, ErrClosed
	}
	for {
		p, flags, size, err := r.peek()
		if err == nil && size == 0 {
			// A writer that publishes only padding could keep this loop
			// going: it ends at Close and at the deadline like a wait.
			// The end of the stream comes first, also past the deadline.
			if r.s.closed.Load()&closedWriter != 0 && !r.published() {
				err = io.EOF
			} else if err = r.expired(); err == nil {
				err = wait(r, r.s.rpark, &r.spin, &r.dl)
			}
			if err == nil {
				continue
			}
		}
		if err != nil {
			r.s.release()
			return nil, false, err
		}
		r.lease = size // the reference stays taken until Release
		r.marked = flags&flagMark != 0
		return p, flags&flagMore != 0, nil
	}
}

// Marked reports whether the record Next returned last carried the
// writer's mark (Writer.Mark). The header it comes from was read once, by
// Next, so a peer cannot change the answer afterwards. The owner goroutine
// calls it.
func (r *Reader) Marked() bool { return r.marked }

// Arm reports whether Next would return at once, with a record or an
// error. If not, it asks the writer to ring this side's doorbell when it
// next commits (or closes) and reports false: the owner then waits until
// the doorbell's other end is readable, drains it, and calls Arm again.
// This is how one goroutine watches many rings without sleeping in any of
// them. The owner goroutine calls it.
func (r *Reader) Arm() bool {
	if r.lease != 0 || !r.s.life.acquire() {
		return true
	}
	defer r.s.release()
	for armed := false; ; armed = true {
		_, _, size, err := r.peek()
		if size > 0 || err != nil || r.s.closed.Load()&closedWriter != 0 {
			if armed {
				r.s.rpark.CompareAndSwap(parkedBell, 0)
			}
			return true
		}
		if armed {
			return false
		}
		// Raise the word before the last look, as a futex wait does.
		r.s.rpark.Store(parkedBell)
	}
}

// Ready reports whether Next would return at once with a record or an
// error other than ErrTimeout (as Arm and Spin, it does not look at the
// deadline), without waiting and without arming: the look a watcher takes
// at a ring whose owner waits for it to say so. The owner goroutine calls
// it, or a goroutine it has handed the Reader to while it waits (the
// hand-over and the hand-back ordering their uses); it only reads.
func (r *Reader) Ready() bool {
	if r.lease != 0 || r.err != nil {
		return true
	}
	if r.held {
		ok, err := r.ready()
		return ok || err != nil
	}
	if !r.s.life.acquire() {
		return true
	}
	ok, err := r.ready()
	r.s.release()
	return ok || err != nil
}

// Prefetch asks for the cache lines of the record at the head, if one is
// published there, without waiting for them: a watcher that found the
// ring Ready and hands it to the goroutine that will read the record
// calls it, so that the record's lines travel from the writer's processor
// during the hand-off instead of during the reader's first pass. It reads
// the header once and asks for lines of the data area only (at most
// readPrefetchMax bytes), so a peer's scribbling can make it ask for the
// wrong lines but not touch memory outside the mapping. The goroutine that
// may call Ready calls it; it only reads.
func (r *Reader) Prefetch() {
	if !r.held {
		if !r.s.life.acquire() {
			return
		}
		defer r.s.release()
	}
	r.prefetchHead(readPrefetchMax)
}

// prefetchHead asks for the lines of the record at the head, at most
// limit bytes of them, on a reference the caller holds.
func (r *Reader) prefetchHead(limit uint64) {
	if start, end, ok := r.prefetchRange(); ok {
		prefetchRead(&r.s.data[start], uintptr(min(end, start+limit)-start))
	}
}

// prefetchRange is the part of the data area, from start to end, that
// Prefetch asks for, if any: from the line after the header's (which is
// in this cache already) to the end of the record the header announces,
// cut at the end of the area and at readPrefetchMax. None while a lease
// is held (the record is the owner's already) or once the ring is corrupt.
func (r *Reader) prefetchRange() (start, end uint64, ok bool) {
	if r.lease != 0 || r.err != nil {
		return 0, 0, false
	}
	off := r.head & r.s.mask
	h := word64(r.s.data, off).Load()
	if r.classify(h) != wordRecord {
		return 0, 0, false
	}
	n, _ := unpackRecord(h)
	start = (off + 64) &^ 63
	end = min(off+recordHeader+uint64(n), r.s.capacity, off+readPrefetchMax)
	return start, end, start < end
}

// readPrefetchMax bounds what Prefetch asks for: beyond a few kilobytes
// the processor's own prefetcher keeps ahead of a reader that copies the
// record from its start.
const readPrefetchMax = 16 << 10

// waitPrefetchMax bounds what a wait asks for (Options.Prefetch): the
// lines of a small record, which its reader would otherwise take one at a
// time. More would hold the owner in the prefetch instructions once the
// processor's outstanding misses are at their limit, where the owner
// should be doing its bookkeeping, and its copy finds the rest anyway.
const waitPrefetchMax = 512

// Hold pins the mapping for a run of Ready calls, so that each of them is
// only loads: a reference taken and dropped per look is an atomic write
// to a cache line the owner's calls write too, and a watcher looking at
// many rings from another processor would pull that line back and forth.
// It reports false, holding nothing, once the side is closed (Ready then
// says so at once). Close still ends the side; the mapping outlives it
// until Unhold. The goroutine that may call Ready calls Hold and Unhold,
// in pairs, and nothing else of the Reader's in between.
func (r *Reader) Hold() bool {
	if r.held || !r.s.life.acquire() {
		return false
	}
	r.held = true
	return true
}

// Unhold ends a Hold; without one it does nothing.
func (r *Reader) Unhold() {
	if r.held {
		r.held = false
		r.s.release()
	}
}

// Spin waits for Next to have something to return, by spinning for at
// most the side's adaptive spin (Options.Spin), without parking and
// without arming; it reports whether Next would now return at once. An
// owner that waits on a doorbell calls it before Arm, so that a peer that
// answers quickly costs neither side a system call. The owner goroutine
// calls it.
func (r *Reader) Spin() bool {
	if r.lease != 0 || !r.s.life.acquire() {
		return true
	}
	defer r.s.release()
	return r.waited(spinOnly(r, &r.spin))
}

// SpinNext is Spin followed, when the spin ends with a record at the
// head, by a Next that does not wait, under one hold of the mapping: the
// hold the spin took becomes the record's lease, at less cost than the
// two calls, and with nothing between the spin's end and the record. With
// ok false nothing is held: no record came within the spin, or the side
// has closed, or Next has an error to report (Ready and Next then say
// so at once). The owner goroutine calls it, without a lease held.
func (r *Reader) SpinNext() (p []byte, more, ok bool) {
	if r.lease != 0 || !r.s.life.acquire() {
		return nil, false, false
	}
	if r.waited(spinOnly(r, &r.spin)) && !r.s.life.isClosed() {
		if p, more, ok = r.take(); ok {
			return p, more, true
		}
	}
	r.s.release()
	return nil, false, false
}

// take takes the record at the head, if one is there, as Next does but
// without waiting: the reference the caller holds becomes its lease. It
// reports false, holding nothing more, when there is none or Next has an
// error to report.
func (r *Reader) take() (p []byte, more, ok bool) {
	p, flags, size, err := r.peek()
	if err != nil || size == 0 {
		return nil, false, false
	}
	r.lease = size
	r.marked = flags&flagMark != 0
	return p, flags&flagMore != 0, true
}

// waited is the end of a wait that reports ok, on the owner's reference:
// with Options.Prefetch, a record found at the head is asked for.
func (r *Reader) waited(ok bool) bool {
	if ok && r.prefetch {
		r.prefetchHead(waitPrefetchMax)
	}
	return ok
}

// Release gives the record returned by Next back to the writer. Without a
// lease held it does nothing.
func (r *Reader) Release() {
	if r.lease == 0 {
		return
	}
	r.giveBack()
	r.s.release()
}

// Drop ends the lease on the record Next returned without giving it back:
// the head stays before it, so the writer does not count it as taken
// (Writer.Taken), and the next Next returns it again. It is for a reader
// that will not act on the record (its connection ends first), where a
// give-back would tell the writer that it did. Without a lease held it
// does nothing. The owner goroutine calls it.
func (r *Reader) Drop() {
	if r.lease == 0 {
		return
	}
	r.lease = 0
	r.s.release()
}

// ReleaseNext is Release followed by a Next that does not wait: it gives
// the record back and, when the next record is there already, takes it
// and returns it as Next would, with ok true; the lease passes from one
// record to the next at less cost than a Release and a Next. With ok
// false nothing is held (no record yet, the side closed, or an error for
// Next to report). The owner goroutine calls it, with a lease held.
func (r *Reader) ReleaseNext() (p []byte, more, ok bool) {
	if r.lease == 0 {
		return nil, false, false
	}
	r.giveBack()
	if !r.s.life.isClosed() {
		if p, more, ok = r.take(); ok { // the reference passes to this record
			return p, more, true
		}
	}
	r.s.release()
	return nil, false, false
}

// giveBack moves the head past the leased record, for the writer, and
// wakes the writer if it waits for room.
func (r *Reader) giveBack() {
	r.head += r.lease
	r.lease = 0
	publishIndex(r.s.head, r.head)
	r.s.wake(r.s.wpark)
}

// ReadMessage reads the next whole message, appending it to dst, and
// returns the extended slice. A message longer than limit bytes is read to
// its end and dropped, with ErrTooLarge. If it fails in the middle of a
// message (a deadline), the rest of that message is skipped by the next
// call. A writer that closed in the middle of a message gives
// io.ErrUnexpectedEOF.
func (r *Reader) ReadMessage(dst []byte, limit int) ([]byte, error) {
	// Records that keep coming never make Next wait, so the loops look at
	// Close and the deadline themselves: an endless message must not
	// outlast them.
	for r.partial {
		if err := r.expired(); err != nil {
			return dst, err
		}
		_, more, err := r.Next()
		if err != nil {
			return dst, err
		}
		r.Release()
		r.partial = more
	}
	start, begun, tooLarge := len(dst), false, false
	for {
		if begun {
			if err := r.expired(); err != nil {
				r.partial = true
				return dst[:start], err
			}
		}
		p, more, err := r.Next()
		if err != nil {
			if begun {
				r.partial = true
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
			}
			return dst[:start], err
		}
		if !tooLarge && len(p) <= limit-(len(dst)-start) {
			dst = append(dst, p...)
		} else {
			tooLarge = true
		}
		r.Release()
		begun = true
		if !more {
			if tooLarge {
				return dst[:start], ErrTooLarge
			}
			return dst, nil
		}
	}
}

// Close ends the reader's side: a waiting call returns ErrClosed, the
// writer gets ErrPeerClosed, and the mapping is released once no call is
// in progress and no lease is held. Any goroutine may call it; a second
// call returns ErrClosed.
func (r *Reader) Close() error {
	if !r.s.close(closedReader) {
		return ErrClosed
	}
	return nil
}

// peek looks at the record at the head: its payload, flags and size, or
// size 0 if the ring is empty. Padding records are consumed on the way.
func (r *Reader) peek() (p []byte, flags uint32, size uint64, err error) {
	if r.err != nil {
		return nil, 0, 0, r.err
	}
	for {
		off := r.head & r.s.mask
		toEnd := r.s.capacity - off
		h := word64(r.s.data, off).Load()
		switch r.classify(h) {
		case wordEmpty:
			return nil, 0, 0, nil
		case wordCorrupt:
			return nil, 0, 0, r.fail("record header", h)
		}
		n, flags := unpackRecord(h)
		flags &^= sealMask
		if flags == flagPad {
			if off == 0 {
				// Padding fills the rest of the area after a record; one
				// at the start would make a lap of nothing, and the next
				// word, which a writer may keep sealing, another.
				return nil, 0, 0, r.fail("padding", toEnd)
			}
			r.head += toEnd
			publishIndex(r.s.head, r.head)
			r.s.wake(r.s.wpark) // the padding may be the room a writer waits for
			continue
		}
		if flags&^(flagMore|flagMark) != 0 {
			return nil, 0, 0, r.fail("record flags", uint64(flags))
		}
		size = recordSize(uint64(n))
		if size > toEnd {
			return nil, 0, 0, r.fail("record length", uint64(n))
		}
		start := off + recordHeader
		return r.s.data[start : start+uint64(n) : start+uint64(n)], flags, size, nil
	}
}

// fail ends the reader for good with a *CorruptError and tells the writer.
func (r *Reader) fail(field string, v uint64) error {
	r.err = &CorruptError{Field: field, Value: v, At: r.head}
	r.s.markClosed(closedReader)
	r.s.wake(r.s.wpark)
	return r.err
}

// expired reports ErrClosed after Close and ErrTimeout past the deadline.
func (r *Reader) expired() error {
	if r.s.life.isClosed() {
		return ErrClosed
	}
	if left, has := r.dl.remaining(); has && left <= 0 {
		return ErrTimeout
	}
	return nil
}

// ready is the reader's wait condition: a record published, or a reason
// to stop.
func (r *Reader) ready() (bool, error) {
	if r.s.life.isClosed() {
		return false, ErrClosed
	}
	if r.published() {
		return true, nil
	}
	if r.s.closed.Load()&closedWriter != 0 {
		// The writer publishes its last record before its flag.
		if r.published() {
			return true, nil
		}
		return false, io.EOF
	}
	return false, nil
}

// What the word at the head can be.
const (
	wordEmpty   = iota // nothing published there yet
	wordRecord         // a header sealed for the head: a record, or padding
	wordCorrupt        // a value no writer leaves there
)

// classify says what h, the word at the head, is (classifyAt).
func (r *Reader) classify(h uint64) int { return r.classifyAt(r.head, h) }

// classifyAt says what h, the word at position pos, is. Until the writer
// publishes a record at pos, the word there is zero (the writer cleared
// it), or, when the ring was full, the header of the record one lap
// before (see seal); any other value is the peer's scribbling.
func (r *Reader) classifyAt(pos, h uint64) int {
	_, flags := unpackRecord(h)
	switch flags & sealMask {
	case seal(pos, r.s.shift):
		return wordRecord
	case seal(pos-r.s.capacity, r.s.shift):
		return wordEmpty
	}
	if h == 0 {
		return wordEmpty
	}
	return wordCorrupt
}

// published reports whether Next would find a record at the head, or a
// value that it reports as corrupt. Padding at the head counts for what
// follows it: a writer that holds a reservation may publish the padding
// before the record that it makes room for (Flush), and a Next that steps
// over it then waits.
func (r *Reader) published() bool {
	off := r.head & r.s.mask
	h := word64(r.s.data, off).Load()
	switch r.classify(h) {
	case wordEmpty:
		return false
	case wordCorrupt:
		return true
	}
	if _, flags := unpackRecord(h); flags&^sealMask != flagPad || off == 0 {
		return true // a record, or padding where Next finds it corrupt
	}
	return r.classifyAt(r.head+r.s.capacity-off, word64(r.s.data, 0).Load()) != wordEmpty
}
