package engine

import (
	"sync/atomic"

	"github.com/valyala/bytebufferpool"
)

// Busy polling: after a loop answers a request on a persistent connection
// it may spin for a short while before going back to gnet's poller. The
// poller runs epoll_wait with a zero timeout after every batch of events; if
// the next request arrived during the spin, that call finds it and the loop
// never sleeps: no wake-up latency, and a round trip costs three system
// calls (epoll_wait, read, write) instead of four. The spin is learned per
// loop from the gaps it observes and switches itself off when the peer is
// too slow for it to pay. A loop spins only while it serves one connection:
// with more, the next event is usually another connection's, which a spin
// would only delay (and the gaps would teach it nothing about its peer).
const (
	// spinHitGap is the least gap taken as "the event was already there";
	// the loop calibrates the real bound from the fastest gaps it sees
	// (what epoll_wait with a zero timeout plus a read costs depends on the
	// machine: a few microseconds).
	spinHitGap = 3_000 // ns
	// spinMin is the floor a successful spin decays to.
	spinMin = 1_000 // ns
	// spinCooldown: after spinMaxMisses spins in a row that could not have
	// caught the next request, spinning stays off for this long before the
	// loop learns again. A single miss is often a scheduling hiccup.
	spinCooldown  = 20_000_000 // ns
	spinMaxMisses = 4
)

// loopState is per event loop and touched only by that loop's goroutine,
// except the counters.
type loopState struct {
	max       int64 // longest spin, ns; 0 disables
	spin      int64 // current spin, ns; 0 = not spinning
	lastExit  int64
	spun      int64 // how long the loop spun before lastExit
	armed     bool  // lastExit followed a reply on a persistent connection
	coolUntil int64
	fastGap   int64 // running minimum of gaps after a spin, drifting up
	misses    int   // consecutive spins too short to have caught anything
	conns     int   // connections open on the loop
	bell      *doorbell
	stats     *counters

	// Solo waits (solo.go).
	parked atomic.Bool // in a solo wait; any goroutine reads it
	pfds   pollSet
	rbuf   []byte

	reply *bytebufferpool.ByteBuffer // inline replies' buffer (ReplyWriter.begin)
	gw    gather                     // a large inline reply's pieces (ReplyWriter.writeGathered)
	iov   []iovec                    // the writev and readv scratch of writeGathered and soloWait
}

// hitBound is the gap under which the next event is taken to have been
// waiting when the loop came back: four times the fastest such gap seen,
// since a sleep in epoll_wait would have added a wake-up, many times longer
// than such a gap.
func (l *loopState) hitBound() int64 {
	return max(spinHitGap, 4*l.fastGap)
}

// enter learns from the gap between the loop's last return and this event.
func (l *loopState) enter(now int64) {
	if !l.armed {
		return
	}
	l.armed = false
	gap := now - l.lastExit
	spun := l.spun
	l.spun = 0
	if spun > 0 {
		if l.fastGap == 0 || gap < l.fastGap {
			l.fastGap = gap
		} else {
			l.fastGap += l.fastGap/64 + 1 // forget a lucky minimum slowly
		}
	}
	switch {
	case spun > 0 && gap <= l.hitBound():
		l.stats.spinHits.Add(1)
		l.misses = 0
		l.spin = max(l.spin-l.spin/16, spinMin) // creep down towards the peer's pace
	case spun > 0:
		l.stats.spinMisses.Add(1)
		if need := spun + gap; need <= l.max {
			l.misses = 0
			l.spin = min(need+need/4, l.max)
		} else if l.misses++; l.misses >= spinMaxMisses {
			l.misses = 0
			l.spin = 0
			l.coolUntil = now + spinCooldown
		}
	case gap > spinHitGap && gap <= l.max && now >= l.coolUntil:
		l.spin = min(gap+gap/4, l.max) // we slept; a spin this long would not have
	}
}

// exit spins if the loop just answered a persistent request and spinning
// pays, then records the time of return.
func (l *loopState) exit(s *Server, candidate bool) {
	if l.max == 0 {
		return // never armed, so enter never reads lastExit
	}
	now := s.now()
	candidate = candidate && l.conns == 1
	if candidate && l.spin > 0 {
		end := now + l.spin
		for now < end {
			now = s.now()
		}
		l.spun = l.spin
	}
	l.armed = candidate && l.max > 0
	l.lastExit = now
}
