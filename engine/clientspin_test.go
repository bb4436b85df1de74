package engine

import (
	"runtime"
	"testing"
	"time"
)

// TestClientSpinPlan: the client keeps spinning while enough replies come
// within the limit, however slow the others are; stops when few do; and
// still tries once in 16 waits.
func TestClientSpinPlan(t *testing.T) {
	const us = int64(time.Microsecond)
	epoch := time.Now().Add(-time.Second)
	now := func() int64 { return int64(time.Since(epoch)) }
	c := newSpinPlan(50 * time.Microsecond)
	reply := func(wait int64) {
		c.sentAt = now() - wait
		c.learn(now(), 1)
	}
	// Bimodal: half the replies in 15 µs, half in 90 µs (a mean of 52 µs
	// is above the limit, but spinning catches half of them).
	for i := range 64 {
		reply([]int64{15 * us, 90 * us}[i%2])
	}
	planned := now()
	c.plan(planned, 1)
	if c.until == 0 {
		t.Fatalf("half the replies within the limit, yet no spin (hit rate %d/1024)", c.hitRate)
	}
	// From the time given to plan: a clock read after it would count
	// whatever delayed this goroutine meanwhile.
	if budget := c.until - planned; budget > 50*us || budget < 45*us {
		t.Fatalf("budget %d ns, want about 4 x 15 µs capped at 50 µs", budget)
	}
	// Spinning clients are limited to half of GOMAXPROCS (at least one).
	others := make([]spinPlan, runtime.GOMAXPROCS(0))
	spun := 1
	for i := range others {
		others[i] = newSpinPlan(50 * time.Microsecond)
		if others[i].plan(now(), 1); others[i].until != 0 {
			spun++
		}
	}
	if want := max(1, runtime.GOMAXPROCS(0)/2); spun != want {
		t.Fatalf("%d clients spin at once, want %d", spun, want)
	}
	for i := range others {
		others[i].end()
	}
	c.end()
	if n := clientWaits.spins(); n != 0 {
		t.Fatalf("%d spin slots still taken", n)
	}
	// Slow replies only: spinning stops, but one wait in 16 still tries.
	for range 64 {
		reply(200 * us)
	}
	spins := 0
	for range 64 {
		if c.plan(now(), 1); c.until != 0 {
			spins++
		}
		c.end()
	}
	if spins != 4 {
		t.Fatalf("%d spins in 64 waits with slow replies, want 4 probes", spins)
	}
	// Several requests in flight: never spin.
	c.hitRate = 1024
	if c.plan(now(), 2); c.until != 0 {
		t.Fatal("spinning with two requests in flight")
	}
}
