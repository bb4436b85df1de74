package engine

import (
	"math"
	"testing"

	"github.com/pktipc/pktipc/ring"
)

// TestGrantRing: a handshake's size is rounded down to a power of two
// within the server's bounds, whatever it asks; asking for the most a
// 32-bit int holds, with the largest ring allowed, once looped forever
// there (twice the largest ring overflowed).
func TestGrantRing(t *testing.T) {
	for _, tc := range []struct{ n, most, want int }{
		{0, ring.MaxCapacity, ring.MinCapacity},
		{ring.MinCapacity - 1, ring.MaxCapacity, ring.MinCapacity},
		{ring.MinCapacity, ring.MaxCapacity, ring.MinCapacity},
		{3 * ring.MinCapacity, ring.MaxCapacity, 2 * ring.MinCapacity},
		{1 << 20, 1 << 16, 1 << 16},
		{ring.MaxCapacity, ring.MaxCapacity, ring.MaxCapacity},
		{math.MaxInt32, ring.MaxCapacity, ring.MaxCapacity},
		{math.MaxInt, ring.MaxCapacity, ring.MaxCapacity},
	} {
		if got := grantRing(tc.n, tc.most); got != tc.want {
			t.Errorf("grantRing(%d, %d) = %d, want %d", tc.n, tc.most, got, tc.want)
		}
	}
}

// TestRingDeadlineWord: a ring connection's deadline and its start are
// read back as one pair, from the first deadline's zero to starts far in
// the server's life, and a start that moves back (the end of a wait for
// room, back to the handler's start) is read with its own deadline.
func TestRingDeadlineWord(t *testing.T) {
	rc := &ringConn{s: &Server{}}
	if got := rc.dl.load(); got != (seen{whyFirstByte, 0}) {
		t.Fatalf("a new connection's deadline: %+v", got)
	}
	for _, want := range []seen{
		{whyIdle, 1},
		{whyRequest, 5e9},
		{whyHandler, 7e9},
		{whyWrite, 9e9},
		{whyHandler, 7e9},
		{whyIdle, 1 << 59}, // 18 years after the server started
	} {
		rc.setWhy(want.why, want.since)
		if got := rc.dl.load(); got != want {
			t.Errorf("setWhy(%v, %d): look %+v", want.why, want.since, got)
		}
	}
}
