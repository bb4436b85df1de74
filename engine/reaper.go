package engine

import (
	"context"
	"sync/atomic"
	"time"
)

// Reaper periods. Deadlines are checked every tick (a twentieth of the
// shortest timeout in force, within these bounds, so a deadline fires
// within 5% of its time); drains without a write watch are looked at every
// drainPoll.
const (
	reaperTickMin = 5 * time.Millisecond
	reaperTickMax = 100 * time.Millisecond
	reaperNapMax  = 5 * time.Second
	drainPoll     = time.Millisecond
)

// The reaper is one goroutine with five duties, each done at every tick:
//
//  1. deadlines: close the connections whose current deadline passed,
//     with tighter first-byte and request deadlines under pressure;
//  2. stopping: close idle connections while the server stops;
//  3. drains that have no write watch (no descriptor to watch with): ask
//     their loops to look at them;
//  4. the memory budget: trim its arena after load;
//  5. solo waits: ring parked loops, so that whatever gnet queued for one
//     without ringing waits at most a tick.
//
// Ring connections' deadlines are checked in the same tick (reapRings).
// While none of the duties needs the tick, the reaper naps (napFor).
func (s *Server) reaper() {
	defer s.wg.Done()
	t := time.NewTimer(s.reaperTick(false))
	defer t.Stop()
	var r reapScratch
	for {
		s.clock.Store(s.now())
		select {
		case <-s.reaperStop:
			return
		case <-t.C:
		case <-s.reaperKick:
			t.Stop() // synchronous timer channels (Go 1.23): nothing stale to drain
		}
		s.napping.Store(false)
		s.clock.Store(s.now())
		pressured := s.reapConns(&r)
		s.reapRings(&r)
		s.reapShots(s.now())
		s.reapRescues(s.now())
		drains := s.pollDrains(&r)
		s.budget.tidy(s.stats.budgetClosed.Load())
		if !s.reaperQuiet {
			s.wakeParked()
		}
		next := s.reaperTick(pressured)
		if drains {
			next = drainPoll
		} else if nap := s.napFor(pressured); nap > 0 {
			next = nap
		}
		t.Reset(next)
	}
}

// napFor returns how long the reaper may sleep when only long deadlines
// run (idle, handler), or 0. An idle server then wakes a few times a
// minute instead of ten times a second: each wake-up of an idle Go process
// costs CPU, more so on a virtual machine. A connection that
// starts a short deadline (first byte, request, write) cuts the nap short
// (hurry). Any of these keeps the reaper on its usual tick: the server
// stopping, pressure, drains, a connection not yet enrolled, loops parked
// in solo waits (whose safety net is the tick), a budget arena to trim.
//
// Napping is a Dekker handshake with hurry: the reaper raises napping and
// then looks at every deadline again; a connection stores its deadline
// and then reads napping. One of the two sees the other.
func (s *Server) napFor(pressured bool) time.Duration {
	if pressured || s.stopping.Load() || s.anyParked() || s.budget.cachedBytes() > arenaKeep {
		return 0
	}
	nap := reaperNapMax
	for _, d := range []time.Duration{s.opts.idleTimeout, s.opts.handlerTimeout} {
		if d > 0 {
			nap = min(nap, d/20)
		}
	}
	if nap <= reaperTickMax {
		return 0
	}
	s.napping.Store(true)
	if s.stopping.Load() || !s.onlyLongDeadlines() { // beginStop stores stopping, then hurries
		s.napping.Store(false)
		return 0
	}
	return nap
}

// onlyLongDeadlines reports whether every connection's deadline is a long
// one (idle or handler), none waits for a drain or to be enrolled, no
// one-shot reply lingers, and no rescued reply is being finished (its
// deadline may be a write's).
func (s *Server) onlyLongDeadlines() bool {
	if s.lingering.count() > 0 || s.rescues.count() > 0 {
		return false
	}
	long := func(w why) bool { return w == whyIdle || w == whyHandler }
	a := s.adm
	a.mu.Lock()
	ok := len(a.draining) == 0 && a.pending == 0
	for c := range a.open {
		if !ok {
			break
		}
		ok = long(c.dl.load().why)
	}
	a.mu.Unlock()
	if !ok {
		return false
	}
	rs := &s.rings
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for rc := range rs.conns {
		if !long(rc.dl.load().why) {
			return false
		}
	}
	return true
}

// hurry ends the reaper's nap: a deadline shorter than the nap started.
// Any goroutine; it costs one atomic load when the reaper is not napping.
func (s *Server) hurry() {
	if s.napping.Load() {
		select {
		case s.reaperKick <- struct{}{}:
		default:
		}
	}
}

// reapScratch keeps the reaper's lists between ticks.
type reapScratch struct {
	expired      []expiry
	idle, drains []*conn
	rings        []ringExpiry
	peek         [1]byte
}

// seen is a deadline as the reaper saw it: which one, and since when. A
// later look that finds it unchanged knows the deadline was not started
// again in between.
type seen struct {
	why   why
	since int64
}

// deadlineWord holds a connection's deadline, which one and since when
// (by the server's clock), in one word: since<<deadlineWhyBits | why. Its
// owner (the connection's loop, worker or ring goroutine) stores it; the
// reaper reads the pair whole. Read from two words, one deadline could be
// paired with another's start, and a start can move back (a handler's
// deadline comes back, from its start, after a wait for the reader): the
// write deadline read with the handler's earlier start would kill a
// healthy connection.
type deadlineWord struct{ v atomic.Int64 }

// deadlineWhyBits is the width of the why in a deadlineWord.
const deadlineWhyBits = 3

// Every why fits in deadlineWhyBits (the constant below is negative,
// and does not compile, once one does not).
const _ = uint(1<<deadlineWhyBits - 1 - whyWrite)

// store starts deadline w at since. The owner calls it.
func (d *deadlineWord) store(w why, since int64) {
	d.v.Store(since<<deadlineWhyBits | int64(w))
}

// storeChanged is store when the deadline differs from the one held, and
// reports whether it did: a store is a locked instruction, worth saving
// on a request's path. The owner calls it.
func (d *deadlineWord) storeChanged(w why, since int64) bool {
	v := since<<deadlineWhyBits | int64(w)
	if d.v.Load() == v {
		return false
	}
	d.v.Store(v)
	return true
}

// load reads the deadline. Any goroutine.
func (d *deadlineWord) load() seen {
	v := d.v.Load()
	return seen{why(v & (1<<deadlineWhyBits - 1)), v >> deadlineWhyBits}
}

// expiry is a connection whose deadline had passed when the reaper
// looked.
type expiry struct {
	c *conn
	seen
}

// spoke reports whether c's input holds bytes its loop has not read: the
// client sent in time, and a loop held up (by an inline handler, or a
// starved processor) has yet to look. Peeking consumes nothing. Should c
// close meanwhile and its descriptor be reused, the answer is about
// another socket and costs at most a tick.
func (r *reapScratch) spoke(c *conn) bool {
	n, err := recvPeek(c.gc.Fd(), r.peek[:])
	return err == nil && n > 0
}

// timeout is the length of deadline w, tightened under pressure; 0 means
// none.
func (s *Server) timeout(w why, pressured bool) int64 {
	var d int64
	switch w {
	case whyFirstByte:
		d = int64(s.opts.firstByteTimeout)
		if pressured && d > pressureFirstByteTimeout {
			d = pressureFirstByteTimeout
		}
	case whyRequest:
		d = int64(s.opts.requestTimeout)
		if pressured && d > pressureRequestTimeout {
			d = pressureRequestTimeout
		}
	case whyIdle:
		d = int64(s.opts.idleTimeout)
	case whyHandler:
		d = int64(s.opts.handlerTimeout)
	case whyWrite:
		d = int64(s.opts.writeTimeout)
	}
	return d
}

// reaperTick is the reaper's period: a twentieth of the shortest timeout
// in force.
func (s *Server) reaperTick(pressured bool) time.Duration {
	tick := reaperTickMax
	for w := whyFirstByte; w <= whyWrite; w++ {
		if d := time.Duration(s.timeout(w, pressured)); d > 0 && d/20 < tick {
			tick = d / 20
		}
	}
	return max(tick, reaperTickMin)
}

// reapConns closes the connections whose deadline passed, and the idle
// ones while the server stops. It reports whether any connection was under
// pressure.
func (s *Server) reapConns(r *reapScratch) (pressured bool) {
	pressured = s.findExpired(r, s.now())
	s.closeExpired(r)
	return pressured
}

// findExpired lists in r the connections whose deadline has passed at
// now, and the idle ones while the server stops, and reports whether any
// connection was under pressure.
func (s *Server) findExpired(r *reapScratch, now int64) (pressured bool) {
	stopping := s.stopping.Load()
	r.expired, r.idle = r.expired[:0], r.idle[:0]
	a := s.adm
	a.mu.Lock()
	for c := range a.open {
		p := a.pressuredLocked(c.peer.Cred.UID)
		pressured = pressured || p
		d := c.dl.load()
		if t := s.timeout(d.why, p); t > 0 && now-d.since >= t {
			r.expired = append(r.expired, expiry{c, d})
		} else if stopping && phase(c.phaseA.Load()) == phaseIdle {
			r.idle = append(r.idle, c)
		}
	}
	a.mu.Unlock()
	return pressured
}

// closeExpired closes the connections findExpired listed, unless their
// loop moved on meanwhile.
func (s *Server) closeExpired(r *reapScratch) {
	for _, e := range r.expired {
		c, w := e.c, e.why
		if c.dl.load() != e.seen {
			// Its loop moved on meanwhile (a request came to an idle
			// connection, say): its new deadline has not passed.
			continue
		}
		if w == whyFirstByte && r.spoke(c) {
			continue // its loop is late, not its client: it reads the request
		}
		if w == whyIdle && c.onLoop(idleTask{c}) == nil {
			continue // its loop decides (conn.idleExpired)
		}
		// gnet closes c on its loop, later: a pass that finds c again
		// before then neither counts it nor closes it twice.
		if c.expired.CompareAndSwap(0, int32(w)+1) { // the handler's cause, given at close
			s.stats.timeouts[w].Add(1)
			_ = c.gc.Close()
		}
	}
	for _, c := range r.idle {
		if c.onLoop(stopTask{c}) != nil {
			_ = c.gc.Close()
		}
	}
	clear(r.expired)
	clear(r.idle)
}

// pollDrains asks the loops of drains without a write watch to look at
// them, and reports whether there were any.
func (s *Server) pollDrains(r *reapScratch) bool {
	r.drains = r.drains[:0]
	s.adm.mu.Lock()
	for c := range s.adm.draining {
		r.drains = append(r.drains, c)
	}
	s.adm.mu.Unlock()
	for _, c := range r.drains {
		_ = c.onLoop(c.drain)
	}
	n := len(r.drains)
	clear(r.drains)
	return n > 0
}

type stopTask struct{ c *conn }

// Run closes, on the connection's loop, a connection found idle while the
// server stops: at once, or, if gnet still holds part of its last reply
// for a slow reader, once the reader has it (within the write deadline).
func (t stopTask) Run(context.Context) error {
	c := t.c
	if c.closed.Load() || c.phase != phaseIdle {
		return nil // a request came meanwhile: it is served, then the connection closes
	}
	if c.gc.OutboundBuffered() > 0 {
		c.closeWhenRead(c.s.now())
		return nil
	}
	return c.gc.Close()
}

type idleTask struct{ c *conn }

// Run decides, on the connection's loop, what an idle deadline that
// passed means (conn.idleExpired).
func (t idleTask) Run(context.Context) error { t.c.idleExpired(); return nil }

// idleExpired runs on c's loop when the reaper found its idle deadline
// passed. Idle starts once a reply is wholly handed to gnet, which may
// still hold part of it for a peer that reads slowly: closing then would
// cut a reply the peer is reading. Such a connection closes once the peer
// has read the rest, within the write deadline; one with nothing queued
// closes now. A request that came meanwhile ended the idle time.
func (c *conn) idleExpired() {
	dl := c.dl.load()
	if c.closed.Load() || dl.why != whyIdle {
		return
	}
	now := c.s.now()
	if d := c.s.timeout(whyIdle, false); d <= 0 || now-dl.since < d {
		return // idle again, from later
	}
	if c.gc.OutboundBuffered() > 0 {
		c.s.stats.timeouts[whyIdle].Add(1)
		c.closeWhenRead(now) // a later idleTask finds whyWrite and returns early
		return
	}
	if c.expired.CompareAndSwap(0, int32(whyIdle)+1) {
		c.s.stats.timeouts[whyIdle].Add(1)
		_ = c.gc.Close()
	}
}
