package ring

import (
	"sync/atomic"
	"time"
)

// DefaultSpin is how long a side spins, at most, before it parks.
const DefaultSpin = 20 * time.Microsecond

// maxSleep bounds one futex sleep: how late a parked side may notice its
// Close or deadline when the peer tampers with the parking word. A
// variable so that the wake-up stress tests can lift the bound: with it,
// a lost wake-up would cost a second and go unseen; without it, the side
// sleeps to its deadline and the test fails.
var maxSleep = time.Second

// minSpin is the least a spinning side keeps trying, so that it can learn
// that spinning pays again.
const minSpin = time.Microsecond

// spinner adapts how long a side spins before parking: a wait that ended
// within the maximum spin (whether it spun or parked) says the peer
// answers quickly, so the next spin may be longer; a longer wait halves it.
// Owned by the side's owner goroutine.
type spinner struct {
	max, cur time.Duration
}

func newSpinner(max time.Duration) spinner {
	if max == 0 {
		max = DefaultSpin
	}
	if max < 0 {
		max = 0
	}
	return spinner{max: max, cur: max}
}

func (s *spinner) learn(waited time.Duration) {
	if waited <= s.max {
		s.cur = min(s.max, 2*s.cur+minSpin)
		return
	}
	s.cur = max(s.cur/2, min(minSpin, s.max))
}

// cond is what a side waits for.
type cond interface {
	// ready reports whether the wait is over: true when there is
	// something to do, or an error that ends the wait.
	ready() (bool, error)
}

// spinOnly spins like wait, for up to the spinner's current budget, but
// never parks; it reports whether c became ready (or failed). A spin that
// succeeds doubles the budget (up to the maximum) and one that runs out
// halves it (down to minSpin): a side whose peer keeps answering later
// than the spin (one of many connections, each waiting its turn) stops
// burning its processor on spins that miss, and one whose peer answers
// promptly again spins in full again after a few waits.
//
// The clock is first read after 256 tries, so a spin that succeeds sooner
// (a peer answering within a few microseconds, the common case it is for)
// costs no clock read at all; the spin then lasts those tries longer.
func spinOnly(c cond, sp *spinner) bool {
	if sp.cur <= 0 {
		ok, err := c.ready()
		return ok || err != nil
	}
	var start time.Time
	for i := 1; ; i++ {
		if ok, err := c.ready(); ok || err != nil {
			sp.cur = min(sp.max, 2*sp.cur+minSpin)
			return true
		}
		if i%256 == 0 {
			if i == 256 {
				start = time.Now()
			} else if time.Since(start) >= sp.cur {
				sp.cur = max(sp.cur/2, min(minSpin, sp.max))
				return false
			}
		}
		spinPause()
	}
}

// wait blocks until c is ready: it spins for up to the spinner's current
// budget, then parks on word until woken, re-checking c after every
// wake-up, up to the deadline. As in spinOnly, the clock is first read
// after 256 tries: a wait that a prompt peer ends sooner reads no clock,
// and counts as short.
func wait(c cond, word *atomic.Uint32, sp *spinner, dl *deadline) error {
	var start time.Time
	if sp.cur > 0 {
		for i := 1; ; i++ {
			if ok, err := c.ready(); ok || err != nil {
				if start.IsZero() {
					sp.learn(0) // within the first 256 tries
				} else {
					sp.learn(time.Since(start))
				}
				return err
			}
			// No yielding: the spin is short enough that a peer goroutine
			// waiting for this processor loses little, and a yield would
			// add its own cost to the latency the spin is there to save.
			if i%256 == 0 {
				if i == 256 {
					start = time.Now()
				} else if time.Since(start) >= sp.cur {
					break
				}
			}
			spinPause()
		}
	} else {
		start = time.Now()
	}
	defer func() { sp.learn(time.Since(start)) }()
	for {
		// Raise the flag before the last look: the peer publishes and
		// then reads the flag, so one of the two sees the other.
		word.Store(parkedFutex)
		if ok, err := c.ready(); ok || err != nil {
			word.Store(0)
			return err
		}
		left, has := dl.remaining()
		if has && left <= 0 {
			word.Store(0)
			return ErrTimeout
		}
		// The word lies in memory the peer can write and wait on, so a
		// hostile peer can absorb or requeue the wake-up meant for this
		// side; sleeping in bounded slices keeps Close and the deadline
		// effective anyway.
		if !has || left > maxSleep {
			left = maxSleep
		}
		futexWait(word, parkedFutex, left)
	}
}
