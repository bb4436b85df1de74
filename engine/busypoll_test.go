package engine

import (
	"runtime"
	"testing"
	"time"

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

// TestClientSpinPlan: the client keeps spinning while enough replies come
// within the limit, however slow the others are; stops when few do; and
// still tries once in 16 waits.
func TestClientSpinPlan(t *testing.T) {
	const us = int64(time.Microsecond)
	c := &Client{opts: clientOptions{spin: 50 * time.Microsecond}, hitRate: 1024, epoch: time.Now().Add(-time.Second)}
	c.pending = 1
	reply := func(wait int64) {
		c.sentAt = c.now() - wait
		c.learn()
	}
	// Bimodal: half the replies in 15 µs, half in 90 µs (a mean of 52 µs
	// is above the limit, but spinning catches half of them).
	for i := range 64 {
		reply([]int64{15 * us, 90 * us}[i%2])
	}
	c.planSpin()
	if c.spinUntil == 0 {
		t.Fatalf("half the replies within the limit, yet no spin (hit rate %d/1024)", c.hitRate)
	}
	if budget := c.spinUntil - c.now(); budget > 50*us || budget < 45*us {
		t.Fatalf("budget %d ns, want about 4 x 15 µs capped at 50 µs", budget)
	}
	// Spinning clients are limited to half of GOMAXPROCS (at least one).
	others := make([]*Client, runtime.GOMAXPROCS(0))
	spun := 1
	for i := range others {
		others[i] = &Client{opts: c.opts, hitRate: 1024, epoch: c.epoch, pending: 1}
		if others[i].planSpin(); others[i].spinUntil != 0 {
			spun++
		}
	}
	if want := max(1, runtime.GOMAXPROCS(0)/2); spun != want {
		t.Fatalf("%d clients spin at once, want %d", spun, want)
	}
	for _, o := range others {
		o.endSpin()
	}
	c.endSpin()
	if n := spinners.Load(); n != 0 {
		t.Fatalf("%d spin slots still taken", n)
	}
	// Slow replies only: spinning stops, but one wait in 16 still tries.
	for range 64 {
		reply(200 * us)
	}
	spins := 0
	for range 64 {
		if c.planSpin(); c.spinUntil != 0 {
			spins++
		}
		c.endSpin()
	}
	if spins != 4 {
		t.Fatalf("%d spins in 64 waits with slow replies, want 4 probes", spins)
	}
	// Several requests in flight: never spin.
	c.pending = 2
	c.hitRate = 1024
	if c.planSpin(); c.spinUntil != 0 {
		t.Fatal("spinning with two requests in flight")
	}
}
