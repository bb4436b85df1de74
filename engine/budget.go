package engine

import (
	"math/bits"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// The memory budget. Every connection may buffer up to the request cap and
// twice the outbound high-water mark, so a crowd of connections could hold
// far more than the machine has. The budget bounds the sum: request bytes
// (gnet's inbound buffer, the assembler's gathering buffer, a pooled
// handler's request, a ring connection's gathering buffer) and reply bytes
// queued for peers (gnet's outbound buffer, a ring reply the watch spilled),
// plus the large buffers kept
// for reuse. When the sum would pass
// seven eighths of the limit, the connection holding the most is closed (or
// refused a larger buffer, if it is the one asking); a smaller one is never
// closed for a larger one's sake. The last eighth holds the buffers of
// connections already closed, until their loops release them: a loop may
// read for many other connections before it gets to the close, and under a
// crowd of large requests several closes can be on their way at once. So
// what they hold is counted until it is released, and where one more would
// pass the last eighth, the connection asking is refused instead: the
// limit bounds what the server holds, not only what it counts.
//
// Large gathering buffers come from the budget's arena, by powers of two,
// mapped outside the Go heap where the platform allows (arenaAlloc): a
// buffer given back is reused by the next large request of any connection,
// and one the arena drops is unmapped at once. Garbage-collected buffers
// would linger after use until the next collection, and the collector lets
// garbage grow to as much again as the live heap: under a crowd of large
// requests the process would hold about twice its budget. After load, the
// arena keeps only arenaKeep bytes.

// DefaultMemoryBudget bounds the bytes the server buffers for all its
// connections (WithMemoryBudget): sixteen requests at the default size cap.
const DefaultMemoryBudget = 16 * DefaultMaxRequestSize

const (
	// arenaMinClass is the smallest arena buffer (64 KiB); smaller
	// gathering buffers are allocated as usual.
	arenaMinClass = 16
	arenaClasses  = 48 - arenaMinClass

	// arenaKeep bounds the bytes the arena keeps once the load is over.
	arenaKeep = 16 << 20

	// arenaStretch: a request for a buffer may be met with a cached one up
	// to this many classes larger (4x), rather than with new memory.
	arenaStretch = 2

	// closingShare: connections are closed for the budget from 7/8 of it
	// on; the last eighth is for the buffers of connections already chosen
	// to close, which their loops release a moment later.
	closingShare = 8

	// collectAfterClosed: the reaper runs the garbage collector after this
	// many connections were closed for the budget since it last did.
	collectAfterClosed = 64
)

// memBudget owns the server's buffered-byte count and the arena.
//
// Invariant: used is the sum of every open connection's conn.held, each
// added and removed by atomic deltas by the connection's loop (account,
// onClose) or by the evictor, which swaps a victim's held from h to
// evictedHeld(h) and moves h from used to releasing; a connection whose
// held is negative never adds again. Its loop's onClose swaps held to -1
// and, once it has released its buffers, subtracts what was evicted from
// releasing. The evictor adds to releasing only while the sum stays within
// limit/closingShare, or to nothing. Under mu: cached is the bytes in
// free, and used + cached stays within evictAt when new memory is taken
// (makeRoomLocked), so used + cached + releasing stays within limit but
// for the transient overshoot of one loop's read and a lone victim larger
// than the share. Every buffer in free came from arenaAlloc and is
// released with arenaFree when dropped.
type memBudget struct {
	limit int64
	used  atomic.Int64
	// releasing: bytes of connections closed for the budget whose loops
	// have not yet released them.
	releasing atomic.Int64

	mu     sync.Mutex
	free   [arenaClasses][][]byte
	cached int64
	busy   bool // a Get since the reaper last looked

	cachedApprox atomic.Int64 // cached, for readers without mu

	lastClosed uint64 // the reaper's: BudgetClosed at its last collection
}

func arenaClass(n int) int {
	k := bits.Len(uint(max(n, 1) - 1))
	return max(k, arenaMinClass) - arenaMinClass
}

// get lends c a buffer of at least n bytes for its assembler, or returns
// nil when the budget cannot hold it and c is the largest holder. A cached
// buffer of the class, or of a class up to arenaStretch larger, is taken
// before new memory. It runs on c's loop.
func (b *memBudget) get(s *Server, c *conn, n int) []byte {
	buf, size, fits := b.lend(n)
	if buf != nil || size == 0 {
		return buf
	}
	if !fits && !s.relieve(c, size) {
		return nil
	}
	return arenaAlloc(int(size))
}

// lend takes a cached buffer of at least n bytes, of n's class or up to
// arenaStretch classes larger. Failing that, it returns the size of new
// memory for n and whether the budget has room for it, having dropped
// cached buffers to make room; size 0 means that n is beyond the arena.
func (b *memBudget) lend(n int) (buf []byte, size int64, fits bool) {
	k := arenaClass(n)
	if k >= arenaClasses {
		return nil, 0, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy = true
	for j := k; j < min(k+arenaStretch+1, arenaClasses); j++ {
		if l := b.free[j]; len(l) > 0 {
			buf := l[len(l)-1]
			l[len(l)-1] = nil
			b.free[j] = l[:len(l)-1]
			b.setCached(b.cached - int64(cap(buf)))
			return buf[:0], 0, true
		}
	}
	size = int64(1) << (k + arenaMinClass)
	return nil, size, b.makeRoomLocked(size)
}

// take lends a buffer of at least n bytes that no connection's account
// covers (a ring connection's gathering buffer or spill), charged to the budget
// until give takes it back; nil when the budget has no room for it. Any
// goroutine.
func (b *memBudget) take(n int) []byte {
	buf, size, fits := b.lend(n)
	if buf == nil {
		if !fits {
			return nil
		}
		buf = arenaAlloc(int(size))
	}
	b.used.Add(int64(cap(buf)))
	return buf
}

// give takes back a buffer from take. Any goroutine.
func (b *memBudget) give(buf []byte) {
	b.used.Add(-int64(cap(buf)))
	b.put(buf)
}

// makeRoom is makeRoomLocked for callers without mu.
func (b *memBudget) makeRoom(size int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.makeRoomLocked(size)
}

// makeRoomLocked drops cached buffers, largest first, until size more bytes
// fit in the limit, and reports whether they do.
func (b *memBudget) makeRoomLocked(size int64) bool {
	for k := arenaClasses - 1; k >= 0 && b.used.Load()+b.cached+size > b.evictAt(); k-- {
		for len(b.free[k]) > 0 && b.used.Load()+b.cached+size > b.evictAt() {
			b.dropLocked(k)
		}
	}
	return b.used.Load()+b.cached+size <= b.evictAt()
}

// evictAt is where connections start to be closed: below the limit by the
// share that the buffers of connections already closed, whose loops have
// not released them yet, may take meanwhile.
func (b *memBudget) evictAt() int64 { return b.limit - b.limit/closingShare }

func (b *memBudget) dropLocked(k int) {
	l := b.free[k]
	buf := l[len(l)-1]
	l[len(l)-1] = nil
	b.free[k] = l[:len(l)-1]
	b.setCached(b.cached - int64(cap(buf)))
	arenaFree(buf)
}

func (b *memBudget) setCached(n int64) {
	b.cached = n
	b.cachedApprox.Store(n)
}

// put takes back a buffer from get. Any goroutine.
func (b *memBudget) put(buf []byte) {
	size := int64(cap(buf))
	k := arenaClass(cap(buf))
	if k >= arenaClasses || size != int64(1)<<(k+arenaMinClass) {
		return // not the arena's
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used.Load()+b.cached+size > b.evictAt() {
		arenaFree(buf)
		return
	}
	b.free[k] = append(b.free[k], buf[:0])
	b.setCached(b.cached + size)
}

// tidy runs on the reaper at every tick: after a tick without load it
// trims the arena to arenaKeep, and has the runtime return what the load
// left behind elsewhere (gnet's and the pools' buffers) to the system.
func (b *memBudget) tidy(closed uint64) {
	if closed >= b.lastClosed+collectAfterClosed {
		// Connections closed for the budget leave gnet's buffers behind
		// as garbage, which the collector would let grow to as much again
		// as the live heap before collecting.
		b.lastClosed = closed
		runtime.GC()
	}
	b.mu.Lock()
	idle := !b.busy
	b.busy = false
	trimmed := false
	if idle && b.cached > arenaKeep {
		for k := arenaClasses - 1; k >= 0 && b.cached > arenaKeep; k-- {
			for len(b.free[k]) > 0 && b.cached > arenaKeep {
				b.dropLocked(k)
				trimmed = true
			}
		}
	}
	b.mu.Unlock()
	if trimmed {
		debug.FreeOSMemory()
	}
}

func (b *memBudget) cachedBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cached
}

// account brings c's share of the budget up to date with what it buffers
// now, and reports false when c must close: it passed the limit and holds
// more than any other connection. It runs on c's loop.
func (c *conn) account() bool {
	h := int64(c.reqHeld + gnetHeld(c.gc.InboundBuffered()) + gnetHeld(c.gc.OutboundBuffered()))
	if c.workerIO != nil {
		h += c.tailHeld.Load()
	}
	if c.asm != nil {
		h += int64(c.asm.Held())
	}
	if c.pendBuf != nil {
		h += int64(cap(c.pendBuf.B))
	}
	old := c.held.Load()
	if old < 0 {
		return false // evicted
	}
	if h == old {
		return true
	}
	if !c.held.CompareAndSwap(old, h) {
		return false // evicted meanwhile
	}
	b := &c.s.budget
	if used := b.used.Add(h - old); h > old && used > b.evictAt()-b.cachedApprox.Load() && !b.makeRoom(0) {
		return c.s.relieve(c, 0)
	}
	return true
}

// gnetHeld estimates the memory behind n bytes buffered by gnet, whose
// buffers grow by doubling and come from pools by powers of two: the next
// power of two.
func gnetHeld(n int) int {
	if n <= 0 {
		return 0
	}
	return 1 << bits.Len(uint(n-1))
}

// evictedHeld is the held of a connection closed for the budget while it
// held h bytes: negative, as for any connection that must not add again,
// and telling its loop how much it is to release.
func evictedHeld(h int64) int64 { return -1 - h }

// unaccount takes c out of the budget and returns the bytes of it that an
// evictor counted as releasing (0 if none), for onClose to subtract once it
// released its buffers (released). It runs in OnClose.
func (c *conn) unaccount() int64 {
	switch old := c.held.Swap(-1); {
	case old > 0:
		c.s.budget.used.Add(-old)
	case old < -1:
		return -1 - old // evictedHeld
	}
	return 0
}

// released ends the count of n bytes from unaccount, once they are back
// in the arena or unmapped. Any goroutine.
func (b *memBudget) released(n int64) {
	if n > 0 {
		b.releasing.Add(-n)
	}
}

// relieve makes room in the budget by closing the connection that holds
// the most, unless that is c, which then gets false (it must close, or do
// without the need more bytes it asked for). c gets false as well while
// connections already closed for the budget have yet to release so much
// that the victim's bytes would not fit beside them in the share kept for
// them (a victim alone may pass it): until its loop gets to the close, a
// victim's buffers stay in memory. Any goroutine.
func (s *Server) relieve(c *conn, need int64) bool {
	var victim *conn
	var most int64
	s.adm.mu.Lock()
	for o := range s.adm.open {
		if h := o.held.Load(); h > most {
			victim, most = o, h
		}
	}
	s.adm.mu.Unlock()
	mine := c.held.Load()
	if victim == nil || victim == c || most <= mine+need {
		s.stats.budgetClosed.Add(1)
		return false
	}
	b := &s.budget
	if r := b.releasing.Load(); r > 0 && r+most > b.limit/closingShare {
		s.stats.budgetClosed.Add(1)
		return false
	}
	if !victim.held.CompareAndSwap(most, evictedHeld(most)) {
		return true // it changed: its loop will look again
	}
	b.releasing.Add(most)
	b.used.Add(-most)
	s.stats.budgetClosed.Add(1)
	_ = victim.gc.Close()
	return true
}
