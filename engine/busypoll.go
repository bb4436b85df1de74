package engine

import (
	"sync/atomic"

	"github.com/valyala/bytebufferpool"
)

// Busy polling: after a loop answers a request on a persistent connection
// it may poll that connection for a short while, instead of sleeping until
// the next request wakes it. A local peer that sends its next request at
// once then finds the loop awake: the round trip costs no wake-up on either
// side, and a wake-up is most of a local round trip's time and much of its
// CPU. The poll ends the moment the request is there (or the loop's
// doorbell rings), so a spin that catches it costs no latency. The budget
// is learned per loop from the gaps it observes: it follows a peer that
// comes back within it, grows to catch one that came a little too late,
// and switches itself off for a while after spins that could not have
// caught anything. A loop spins only while it serves one connection: with
// more, the next event is usually another connection's, which a spin would
// only delay.
const (
	// spinMin is the shortest spin planned.
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
	lastExit  int64 // when the loop last stopped waiting actively
	spun      int64 // how long the loop spun before lastExit; 0 = no spin
	caught    bool  // the spin ended because the next request came
	armed     bool  // lastExit followed a reply on a persistent connection
	coolUntil int64
	misses    int // consecutive spins too short to have caught anything
	conns     int // connections open on the loop
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

// enter learns from the gap between the loop's last return and this event.
func (l *loopState) enter(now int64) {
	if !l.armed {
		return
	}
	l.armed = false
	gap := now - l.lastExit
	switch {
	case l.caught:
		// The spin caught the request: keep the budget at about twice the
		// wait it took, moving down slowly so that one fast reply does not
		// cut it short.
		l.stats.spinHits.Add(1)
		l.misses = 0
		l.spin = min(max(l.spin-l.spin/16, 2*l.spun, spinMin), l.max)
	case l.spun > 0:
		l.stats.spinMisses.Add(1)
		if need := l.spun + gap; need <= l.max {
			l.misses = 0
			l.spin = min(need+need/4, l.max) // a little longer would have caught it
		} else if l.misses++; l.misses >= spinMaxMisses {
			l.misses = 0
			l.spin = 0
			l.coolUntil = now + spinCooldown
		}
	case gap <= l.max && now >= l.coolUntil:
		l.spin = min(max(gap+gap/4, spinMin), l.max) // the loop slept; a spin this long would not have
	}
	l.spun, l.caught = 0, false
}

// exit runs when the loop is done with an event. If the loop just answered
// a request on its only connection (candidate) and spinning pays, it polls
// the connection fd and the doorbell bell until the next request is there,
// the bell rings or the budget is spent, and reports whether the request
// came. It then records the time, for enter.
func (l *loopState) exit(s *Server, candidate bool, fd, bell int) bool {
	if l.max == 0 {
		return false // never armed, so enter never reads lastExit
	}
	now := s.now()
	candidate = candidate && l.conns == 1
	l.spun, l.caught = 0, false
	if candidate && l.spin > 0 {
		start, end := now, now+l.spin
		for {
			ready, rang := pollNow(fd, bell)
			now = s.now()
			if ready || rang || now >= end {
				l.caught = ready
				break
			}
		}
		l.spun = max(now-start, 1)
	}
	l.armed = candidate
	l.lastExit = now
	return l.caught
}
