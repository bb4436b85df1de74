package ring

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// storeBuffering runs the store-buffering litmus test for rounds rounds:
// in round i two goroutines each store i into their own word with store
// and then load the other's. A round in which both loads miss the other's
// store is a violation of the order publishIndex promises (a store before
// the loads after it), which is what keeps a parking side and a
// publishing side from missing each other. It returns the violations.
func storeBuffering(rounds int, store func(*atomic.Uint64, uint64)) int {
	type padded struct {
		v atomic.Uint64
		_ [56]byte
	}
	var words, done [2]padded
	seen := [2][]uint64{make([]uint64, rounds+1), make([]uint64, rounds+1)}
	var wg sync.WaitGroup
	for side := range 2 {
		wg.Go(func() {
			mine, theirs := &words[side].v, &words[1-side].v
			for i := 1; i <= rounds; i++ {
				// Both sides begin round i once both have ended round i-1.
				for n := 0; done[1-side].v.Load() < uint64(i-1); n++ {
					if n%1024 == 1023 {
						runtime.Gosched()
					}
				}
				store(mine, uint64(i))
				seen[side][i] = theirs.Load()
				done[side].v.Store(uint64(i))
			}
		})
	}
	wg.Wait()
	bad := 0
	for i := 1; i <= rounds; i++ {
		if seen[0][i] < uint64(i) && seen[1][i] < uint64(i) {
			bad++
		}
	}
	return bad
}

// TestPublishIndexOrders: no round of the store-buffering test lets both
// sides miss each other's publishIndex.
func TestPublishIndexOrders(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 || runtime.NumCPU() < 2 {
		t.Skip("needs two processors to run the two sides at once")
	}
	rounds := 200_000
	if testing.Short() {
		rounds = 20_000
	}
	if bad := storeBuffering(rounds, publishIndex); bad != 0 {
		t.Fatalf("%d of %d rounds: both loads passed the other side's store", bad, rounds)
	}
	var w atomic.Uint64
	publishIndex(&w, 42)
	if w.Load() != 42 {
		t.Fatalf("publishIndex stored %d, want 42", w.Load())
	}
}
