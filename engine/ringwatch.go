package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/ring"
)

// ringCrowd: a ring wait goes to a watch while more than ringCrowd waits
// of its process (or server), itself included, are under way. With two,
// the spinning wait (one per two processors) mostly catches its own peer,
// and a hop through the watch's goroutine would cost more than it saves.
const ringCrowd = 2

// ringWatchClock: a watch reads the clock once in this many rounds (and
// when rings come), for the ends of stays, which need no precision: a
// round is a look at each ring, and a clock read would cost as much as
// a few of them.
const ringWatchClock = 8

// ringWatchMax bounds a ring's stay in a watch: a side whose peer sends
// nothing for this long goes back to waiting on its socket, where the end
// of the peer (a client that died, say) shows.
const ringWatchMax = 20 * time.Millisecond

// A watch whose rings brought nothing for ringNapAfter sleeps on all of
// them at once (ring.Napper), until one has something, a ring comes, the
// watch stops, a stay ends, or ringNapMax after the last thing came; then
// it hands every ring back, as it does after its idle time where it cannot
// nap. A spin is worth it while the peers run: a short gap between
// records is a peer at work. A longer one is a peer that waits, or one
// that the machine does not run (more threads than processors, a host
// that takes the virtual processors away): there a spin keeps the
// processor from whoever would run, and the rings' own sleeps and
// doorbells would cost a wake-up for each ring, where a nap costs one for
// all of them.
const (
	ringNapAfter = 50 * time.Microsecond
	ringNapMax   = 10 * time.Millisecond
)

// ringWatch lets many ring sides that wait for their peers cost one
// spinning goroutine rather than one each. A side with nothing to read, in
// a crowd of waits, hands its ring's Reader to the watch and blocks on a
// channel, without arming the ring: its peer, which finds the side not
// parked, rings no doorbell. The watch's goroutine looks at every ring it
// holds in turn, yielding its processor between rounds, and hands a ring
// back (one send on its channel) once Next would return at once (a record,
// the end, an error such as Close), once its stay ends (ringWatchMax, or
// the owner's deadline) or its owner's deadline moves, or when the watch
// stops; the side then takes its record, or arms the ring and waits on its
// socket as before. A watch in which nothing came for a while (its idle
// time, or ringNapMax where it naps) hands every ring back, and once it
// holds none its goroutine ends; the next hand-over starts another.
//
// The gain is on a crowded machine: a side spinning for its own ring keeps
// a processor from the peers it waits for, and a side parked on its socket
// costs its peer a doorbell write and itself an epoll wake-up and a read.
// A watch costs a look per ring per round and two goroutine switches per
// hand-back; when its rings are quiet, it naps on all of them at once
// (ringNapAfter). A side may instead give the watch a serve function, which
// takes the record on the watch's goroutine (a server's request whose
// handler runs inline) and keeps the ring there: no switch at all.
//
// Invariant (mu): added holds the sides handed over and not yet taken by
// the goroutine; running says that a goroutine runs (wg counts it);
// stopped is set once, by stop, after which wait refuses. napping, an
// atomic, is set by the goroutine under mu when it is about to nap and
// has seen no side added and no stop; whoever adds a side, stops the watch
// or cuts a side's wait after that swaps it back and wakes the napper, and
// the goroutine clears it after its nap. From the
// hand-over to the send on its wake channel a side's Reader is used by the
// watch's goroutine alone, which pins its mapping for the stay
// (Reader.Hold: then a look is only loads) and only looks (Reader.Ready),
// or, for a side with a serve, calls serve, which acts for the owner;
// before and after, by its owner alone.
type ringWatch struct {
	idle time.Duration // set before the first wait
	stay time.Duration // the longest a ring stays (0: ringWatchMax); set before the first wait
	// napMax is how long after the last thing came a quiet watch naps
	// (0: ringNapMax), for the tests; set before the first wait.
	napMax time.Duration
	procs  bool // the goroutine runs only within the process's budget (watching)
	// prefetch: a ring handed back with a record has the record's lines
	// asked for first (Reader.Prefetch), for an owner that reads every
	// record it gets (a server's handler reads its request); set before
	// the first wait.
	prefetch bool

	// handed counts the rings handed back with something to read, and
	// spread those of them whose serve the round did not ask (spread),
	// for the tests.
	handed, spread atomic.Uint64
	// serveAll, for the tests, has the goroutine ask every serve, as with
	// two processors, whatever GOMAXPROCS is; read when it starts.
	serveAll atomic.Bool

	// naps counts the naps, for the tests; napper and napRs are the
	// goroutine's.
	naps    atomic.Uint64
	napper  ring.Napper
	napRs   []*ring.Reader
	napping atomic.Bool

	mu      sync.Mutex
	added   []*ringWait
	running bool
	starts  uint64 // goroutines started, for the tests
	stopped bool
	noNap   bool // ring.Napper.Nap failed: the watch spins to its idle time
	wg      sync.WaitGroup
	spare   []*ringWait // the last goroutine's array of held rings, for the next
	runFn   func()      // rw.run, made once: a go statement with a method value allocates
}

// watching counts the watches of the process whose goroutine runs. A
// watch's goroutine is always ready to run while it holds rings, and Go's
// scheduler polls the network only on a processor that has nothing else
// to run (or from its monitor, every 10ms at best): so a watch starts only
// while fewer than GOMAXPROCS-1 others run, which leaves a processor that
// runs out of work and polls. A server and its Clients in one process
// (tests, say) then share one watch between them, and the other waits
// spin and park as lone ones do.
var watching atomic.Int32

// ringWait is one side's place in a watch, made with the side and reused
// for each of its waits. The owner sets r (between waits) and until (before
// each hand-over); the watch reads them while it holds the side. cut may be
// set by any goroutine (Client.SetDeadline); the owner clears it before it
// reads its deadline for a wait.
type ringWait struct {
	r    *ring.Reader
	wake chan struct{} // capacity 1: the watch never blocks on it
	own  time.Time     // the owner's deadline for this wait, or zero
	cut  atomic.Bool   // hand the ring back now: the owner's deadline moved
	// serve, when the owner sets it, takes what the ring has for it on
	// the watch's goroutine instead of handing the ring back, and says
	// whether the ring stays (ringConn.serveWatched): for a server whose
	// handlers never block, a request then costs no goroutine switch.
	serve func() bool
	// Set by the watch's goroutine while it has w: until, when it hands
	// the ring back anyway (ringWatchMax after it took it, or own);
	// pinned, whether it holds r's mapping (Reader.Hold); ready, whether
	// it handed the ring back because Next would return at once, or
	// because serve gave it back (with something left for the owner).
	until  time.Time
	pinned bool
	ready  bool
}

func newRingWait(r *ring.Reader) ringWait {
	return ringWait{r: r, wake: make(chan struct{}, 1)}
}

// wait hands w's ring to the watch and blocks until the watch hands it
// back: at the end of its stay (ringWatchMax) or at deadline (zero: none)
// at the latest, or once w.cut is set. False means that nothing waited:
// the watch has stopped, or its goroutine would be one too many
// (watching). After a wait, w.ready says whether the watch saw something
// for Next; if not, the caller looks itself. The side's owner goroutine
// calls it.
func (rw *ringWatch) wait(w *ringWait, deadline time.Time) bool {
	w.own, w.ready = deadline, false
	rw.mu.Lock()
	if rw.stopped {
		rw.mu.Unlock()
		return false
	}
	if !rw.running {
		if rw.procs && watching.Add(1) > int32(runtime.GOMAXPROCS(0)-1) {
			watching.Add(-1)
			rw.mu.Unlock()
			return false
		}
		rw.running = true
		rw.starts++
		rw.wg.Add(1)
		if rw.runFn == nil {
			rw.runFn = rw.run
		}
		go rw.runFn()
	}
	rw.added = append(rw.added, w)
	rw.mu.Unlock()
	rw.poke()
	<-w.wake
	return true
}

// poke ends the goroutine's nap, if it naps: a side was added, a side's
// cut set, the watch stopped. Any goroutine; without a nap, one atomic
// load.
func (rw *ringWatch) poke() {
	if rw.napping.Load() && rw.napping.CompareAndSwap(true, false) {
		rw.napper.Wake()
	}
}

// maxStay is the longest a ring stays in the watch.
func (rw *ringWatch) maxStay() time.Duration {
	if rw.stay > 0 {
		return rw.stay
	}
	return ringWatchMax
}

// stop hands every ring back, ends the goroutine and waits for it; later
// waits refuse. Any goroutine; once or more.
func (rw *ringWatch) stop() {
	rw.mu.Lock()
	rw.stopped = true
	rw.mu.Unlock()
	rw.poke()
	rw.wg.Wait()
}

// run is the watch's goroutine.
func (rw *ringWatch) run() {
	defer rw.wg.Done()
	rw.mu.Lock()
	held := rw.spare
	rw.spare = nil
	rw.mu.Unlock()
	// spread: with more processors than this goroutine and one other, a
	// round asks one serve and hands any other ring that it finds ready
	// back to its owner, whose goroutine serves it on a processor of
	// its own. One goroutine serving every ring would hold a server with
	// many processors to the speed of one once its clients outrun it, and
	// two rings ready in one round say that they do; with two processors
	// the other one is the clients' or the event loops', and the switches a
	// hand-back costs would be all that changed.
	spread := runtime.GOMAXPROCS(0) > 2 && !rw.serveAll.Load()
	last := time.Now() // when a ring last had something, or came
	now := last
	for round := 1; ; round++ {
		rw.mu.Lock()
		if len(rw.added) > 0 || round%ringWatchClock == 0 {
			now = time.Now()
		}
		if len(rw.added) > 0 {
			for _, w := range rw.added {
				w.pinned = w.r.Hold()
				w.until = now.Add(rw.maxStay())
				if !w.own.IsZero() && w.own.Before(w.until) {
					w.until = w.own
				}
			}
			held = append(held, rw.added...)
			clear(rw.added)
			rw.added = rw.added[:0]
			last = now
		}
		idle := rw.idle // how long a quiet watch keeps its rings
		if !rw.noNap && len(held) <= ring.MaxNap {
			idle = max(idle, rw.napFor())
		}
		if rw.stopped || (len(held) == 0 && now.Sub(last) > rw.idle) {
			handBack(held)
			rw.spare = held[:0]
			rw.running = false
			if rw.procs {
				watching.Add(-1)
			}
			rw.mu.Unlock()
			return
		}
		rw.mu.Unlock()
		asked := false // a serve asked in this round
		for i := 0; i < len(held); {
			w := held[i]
			ready := w.r.Ready()
			declined := false // w's serve was asked and gave the ring back
			if ready && w.serve != nil && (!asked || !spread) {
				last = now
				asked = true
				if w.serveHere() {
					if w.own.IsZero() {
						w.until = now.Add(rw.maxStay()) // busy: its peer lives
					}
					i++
					continue
				}
				declined = true
			} else if !ready && now.Before(w.until) && !w.cut.Load() {
				i++
				continue
			}
			if ready {
				last = now
				rw.handed.Add(1)
				w.ready = true
				if w.serve != nil && !declined {
					rw.spread.Add(1)
				}
				if rw.prefetch && !declined {
					w.r.Prefetch()
				}
			}
			n := len(held) - 1
			held[i], held[n] = held[n], nil
			held = held[:n]
			w.handBack()
		}
		if len(held) > 0 && now.Sub(last) > idle {
			// Nothing came for a while: each side waits on its socket,
			// where a request costs a doorbell but waiting costs nothing.
			handBack(held)
			held = held[:0]
		}
		if len(held) > 0 && last != now && now.Sub(last) >= ringNapAfter && idle > rw.idle {
			rw.nap(held, now, last.Add(idle))
			now = time.Now()
			continue // a look at every ring before the idle time counts again
		}
		runtime.Gosched()
	}
}

// nap sleeps on the rings of held (all of them pinned, at most
// ring.MaxNap) until one has something, a side comes, the watch stops or
// a side's wait is cut, or until end or the first stay's end. On the
// watch's goroutine.
func (rw *ringWatch) nap(held []*ringWait, now, end time.Time) {
	rs := rw.napRs[:0]
	for _, w := range held {
		if !w.pinned {
			return // its Hold failed: the next round hands it back
		}
		if w.until.Before(end) {
			end = w.until
		}
		rs = append(rs, w.r)
	}
	rw.napRs = rs
	defer clear(rs)
	rw.mu.Lock()
	if len(rw.added) > 0 || rw.stopped {
		rw.mu.Unlock()
		return
	}
	rw.napping.Store(true)
	rw.mu.Unlock()
	// A cut set before napping was, whose poke found nothing to wake, is
	// seen here; one set after, by its poke's Wake.
	cut := false
	for _, w := range held {
		cut = cut || w.cut.Load()
	}
	var err error
	if !cut && end.After(now) {
		if err = rw.napper.Nap(rs, end.Sub(now)); err == nil {
			rw.naps.Add(1)
		}
	}
	rw.napping.Store(false)
	if err != nil {
		// The kernel cannot (errors.ErrUnsupported), or refused: from now
		// on this watch spins to its idle time, as it did before naps.
		rw.mu.Lock()
		rw.noNap = true
		rw.mu.Unlock()
	}
}

// napFor is how long after the last thing came a quiet watch naps.
func (rw *ringWatch) napFor() time.Duration {
	if rw.napMax > 0 {
		return rw.napMax
	}
	return ringNapMax
}

// handBack hands every ring of held back to its owner.
func handBack(held []*ringWait) {
	for i, w := range held {
		w.handBack()
		held[i] = nil
	}
}

// serveHere lets w's owner's serve take what the ring has, on the watch's
// goroutine, and reports whether the ring stays. The Hold ends for it
// (serve uses the Reader as its owner does) and starts again after.
func (w *ringWait) serveHere() bool {
	if w.pinned {
		w.pinned = false
		w.r.Unhold()
	}
	if !w.serve() {
		return false
	}
	w.pinned = w.r.Hold()
	return true
}

// handBack ends the watch's Hold of w's ring, if it took one, and wakes
// w's owner. On the watch's goroutine.
func (w *ringWait) handBack() {
	if w.pinned {
		w.pinned = false
		w.r.Unhold()
	}
	w.wake <- struct{}{}
}
