package engine

import (
	"math/rand/v2"
	"testing"
)

// TestRequestQueueModel drives the queue with random pushes, pops and
// back-pops, across its growth and the wrap of its ring, and checks every
// entry against a slice doing the same.
func TestRequestQueueModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q requestQueue
	var model []uint64
	next := uint64(1)
	for step := range 20000 {
		switch op := rng.IntN(10); {
		case op < 5 || len(model) == 0:
			q.push(pending{gen: next})
			model = append(model, next)
			next++
		case op < 9:
			if got := q.front().gen; got != model[0] {
				t.Fatalf("step %d: front %d, want %d", step, got, model[0])
			}
			q.pop()
			model = model[1:]
		default:
			q.popBack()
			model = model[:len(model)-1]
		}
		if q.n != len(model) {
			t.Fatalf("step %d: %d entries, want %d", step, q.n, len(model))
		}
		if l := len(q.ring); l&(l-1) != 0 {
			t.Fatalf("step %d: ring of %d entries, not a power of two", step, l)
		}
		for i, want := range model {
			if got := q.at(i).gen; got != want {
				t.Fatalf("step %d: entry %d is %d, want %d", step, i, got, want)
			}
		}
	}
	if q.front() == nil && len(model) > 0 {
		t.Fatal("front nil with entries left")
	}
}
