package ring

import (
	"math/bits"
	"sync/atomic"
	"time"
	"unsafe"
)

// shared is one process's view of a ring's memory, used by one side.
//
// The owner changes life on every call; the padding makes the struct fill
// an allocation size class of 256-byte slots, so that no other object
// (the peer side's, in a process that holds both) shares its cache lines.
type shared struct {
	sides
	_ [256 - unsafe.Sizeof(sides{})]byte
}

// sides is the state of shared.
type sides struct {
	mem      []byte // the whole mapping
	data     []byte // mem[headerSize:]
	capacity uint64
	mask     uint64
	shift    uint8 // capacity is 1<<shift

	head   *atomic.Uint64
	rpark  *atomic.Uint32
	wpark  *atomic.Uint32
	closed *atomic.Uint32

	unmap func([]byte) error // nil for memory the package does not own
	// bell is this side's descriptor for ringing the peer's doorbell
	// (Options.Doorbell), or -1. It is closed with the mapping.
	bell int
	life lifecycle
}

// newShared views mem, whose size has been checked: a header page and a
// data area of a valid capacity.
func newShared(mem []byte, unmap func([]byte) error) *shared {
	capacity := uint64(len(mem) - headerSize)
	s := &shared{sides: sides{
		mem:      mem,
		data:     mem[headerSize:],
		capacity: capacity,
		mask:     capacity - 1,
		shift:    uint8(bits.TrailingZeros64(capacity)),
		head:     word64(mem, offHead),
		rpark:    word32(mem, offRPark),
		wpark:    word32(mem, offWPark),
		closed:   word32(mem, offClosed),
		unmap:    unmap,
		bell:     -1,
	}}
	s.life.v.Store(1)
	return s
}

// markClosed sets the side's flag in the shared header. The peer may
// write the word too; a lost update there costs only a late notice, since
// each side also keeps its own state. One locked OR, not a loop of
// compare-and-swaps that a peer storing to the word could keep failing.
func (s *shared) markClosed(flag uint32) {
	s.closed.Or(flag)
}

// Values of a parking word.
const (
	parkedFutex = 1 // the side sleeps on the futex at the word
	parkedBell  = 2 // the side's owner waits for a byte on its doorbell
)

// wake wakes the side parked on word, if it said it was: through the
// futex, or with a byte on the doorbell. A value the peer scribbled
// matches neither and wakes nobody.
func (s *shared) wake(word *atomic.Uint32) {
	switch word.Load() {
	case parkedFutex:
		if word.CompareAndSwap(parkedFutex, 0) {
			futexWake(word)
		}
	case parkedBell:
		if word.CompareAndSwap(parkedBell, 0) && s.bell >= 0 {
			ringBell(s.bell)
		}
	}
}

// release drops one reference to the mapping and unmaps it after the last.
func (s *shared) release() {
	if !s.life.release() {
		return
	}
	if s.unmap != nil {
		s.unmap(s.mem)
	}
	if s.bell >= 0 {
		closeBell(s.bell)
	}
}

// discard unmaps a mapping no side was made of.
func (s *shared) discard() {
	s.life.close()
	s.release()
}

// close ends this side: marks it closed in the shared header, wakes the
// peer and this side's owner if it sleeps on the futex (an owner waiting
// on a doorbell is the one closing, or will see the side closed when it
// next arms it), and drops the base reference. It reports false if the
// side was closed already.
func (s *shared) close(flag uint32) bool {
	if !s.life.close() {
		return false
	}
	s.markClosed(flag)
	if flag == closedReader {
		s.wake(s.wpark)
		wakeOwner(s.rpark)
	} else {
		s.wake(s.rpark)
		wakeOwner(s.wpark)
	}
	s.release()
	return true
}

// lifecycle counts references to the mapping so that it is unmapped once,
// by whoever drops the last reference after Close: Close itself, or the
// owner goroutine leaving a call or releasing a lease.
//
// Invariant: the low bits count references: one base reference, held from
// creation until Close, plus one for each call in progress and each lease
// or reservation held by the owner. closedBit is set once, by Close, and
// after it no reference is taken. The mapping is valid while the count is
// above zero.
type lifecycle struct {
	v atomic.Int64
}

const closedBit = 1 << 62

// acquire takes a reference unless the side is closed.
func (l *lifecycle) acquire() bool {
	for {
		v := l.v.Load()
		if v&closedBit != 0 {
			return false
		}
		if l.v.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release drops a reference and reports whether it was the last one.
func (l *lifecycle) release() bool { return l.v.Add(-1) == closedBit }

// close sets the closed bit and reports whether this call set it.
func (l *lifecycle) close() bool {
	for {
		v := l.v.Load()
		if v&closedBit != 0 {
			return false
		}
		if l.v.CompareAndSwap(v, v|closedBit) {
			return true
		}
	}
}

func (l *lifecycle) isClosed() bool { return l.v.Load()&closedBit != 0 }

// epoch anchors deadlines on the monotonic clock: a deadline is kept as
// its distance from epoch, so wall-clock jumps do not move it.
var epoch = time.Now()

// deadline holds a side's deadline, settable from any goroutine.
//
// A deadline found passed stays passed until the next set: remaining
// latches it by negating ns (a compare-and-swap, so that a set in between
// wins), and answers later looks without a clock read. An owner that
// keeps its deadline in the past to poll (the engine's server does, for
// each request it looks for) then reads no clock per look.
type deadline struct {
	ns atomic.Int64 // nanoseconds after epoch; 0 for none; negated once passed
}

func (d *deadline) set(t time.Time) {
	if t.IsZero() {
		d.ns.Store(0)
		return
	}
	ns := int64(t.Sub(epoch))
	if ns <= 0 {
		ns = 1 // already passed, but not "none"
	}
	d.ns.Store(ns)
}

// remaining returns the time left before the deadline (at most zero once
// it has passed) and false if there is none.
func (d *deadline) remaining() (time.Duration, bool) {
	ns := d.ns.Load()
	switch {
	case ns == 0:
		return 0, false
	case ns < 0:
		return 0, true
	}
	left := time.Duration(ns) - time.Since(epoch)
	if left <= 0 {
		d.ns.CompareAndSwap(ns, -ns)
	}
	return left, true
}

// rouse wakes this side's owner if it sleeps on the futex, so that it
// looks at its deadline again; it does nothing once the side is closed.
func (s *shared) rouse(word *atomic.Uint32) {
	if s.life.acquire() {
		wakeOwner(word)
		s.release()
	}
}

// wakeOwner wakes this side's own owner if it sleeps on the futex.
func wakeOwner(word *atomic.Uint32) {
	if word.CompareAndSwap(parkedFutex, 0) {
		futexWake(word)
	}
}

// Doorbell is the waiting end of a doorbell, made by NewDoorbell: the
// owner of one or more armed sides (see Reader.Arm) waits for it to be
// readable instead of sleeping in any one ring. Its methods are for the
// owner goroutine.
type Doorbell struct {
	fd int
}
