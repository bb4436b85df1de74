package engine

import (
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestBusyPollLearns drives a loop's spin state with synthetic gaps: a peer
// that answers within the spin keeps it on, a slow peer turns it off, and a
// loop with more than one connection never spins.
func TestBusyPollLearns(t *testing.T) {
	leakcheck.Check(t)
	s, err := NewServer(socketPath(t), HandlerFunc(echoRaw))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const us = 1000
	l := &loopState{max: 50 * us, stats: &s.stats, conns: 1}

	// The loop slept for 20 µs before the next request: a 25 µs spin would
	// have caught it.
	l.armed, l.lastExit = true, 0
	l.enter(20 * us)
	if l.spin != 25*us {
		t.Fatalf("after a 20 µs sleep: spin %d ns, want 25000", l.spin)
	}
	// A spin that catches the next request at once is a hit.
	l.exit(s, true)
	if !l.armed || l.spun != 25*us {
		t.Fatalf("exit with one connection: armed %v, spun %d", l.armed, l.spun)
	}
	l.enter(l.lastExit + 500)
	if got := s.stats.spinHits.Load(); got != 1 {
		t.Fatalf("hits %d, want 1", got)
	}

	// A peer far slower than the longest spin: after spinMaxMisses misses
	// spinning stops and cools down.
	for range spinMaxMisses {
		l.spin = 10 * us
		l.exit(s, true)
		l.enter(l.lastExit + 5_000*us)
	}
	if l.spin != 0 || l.coolUntil == 0 {
		t.Fatalf("after slow peers: spin %d, cooldown %d", l.spin, l.coolUntil)
	}

	// With two connections on the loop there is no spin and nothing learnt.
	l = &loopState{max: 50 * us, stats: &s.stats, conns: 2, spin: 25 * us}
	l.exit(s, true)
	if l.armed || l.spun != 0 {
		t.Fatalf("exit with two connections: armed %v, spun %d", l.armed, l.spun)
	}
}
