package ring

// Bounded sleeps on the futex, for both sides: how an owner that watches
// a doorbell waits a short while for a peer that answers quickly, for
// one futex call on each side instead of a doorbell byte.

import (
	"sync/atomic"
	"time"
)

// Sleep waits for Next to have something to return by sleeping on the
// ring's futex for at most d, without spinning and without arming; it
// reports whether Next would now return at once. The writer's next
// publish (or Close on either side) wakes it with one futex call, which
// is cheaper for both sides than a doorbell byte; an owner that watches a
// doorbell sleeps briefly like this before it arms, and then only while
// it can spare the thread (the sleep blocks it). The side's deadline
// does not apply. The owner goroutine calls it.
func (r *Reader) Sleep(d time.Duration) bool {
	if r.lease != 0 || !r.s.life.acquire() {
		return true
	}
	defer r.s.release()
	return r.waited(sleep(r, r.s.rpark, d))
}

// Sleep waits for Reserve(n) to have room by sleeping on the ring's
// futex for at most d, like Reader.Sleep; staged records are published
// first. It reports whether Reserve(n) would now return at once. The
// owner goroutine calls it.
func (w *Writer) Sleep(n int, d time.Duration) bool { return w.roomFor(n, roomSleep, d) }

// sleep parks on word until c is ready, for at most d, without spinning
// first and without learning; it reports whether c became ready (or
// failed). The wake-up comes from the peer's publish or release, which
// finds the word raised; Close wakes the owner too.
func sleep(c cond, word *atomic.Uint32, d time.Duration) bool {
	if ok, err := c.ready(); ok || err != nil || d <= 0 {
		return ok || err != nil
	}
	end := time.Now().Add(d)
	for {
		word.Store(parkedFutex)
		if ok, err := c.ready(); ok || err != nil {
			word.CompareAndSwap(parkedFutex, 0)
			return true
		}
		left := time.Until(end)
		if left <= 0 {
			word.CompareAndSwap(parkedFutex, 0)
			return false
		}
		futexWait(word, parkedFutex, left)
	}
}
