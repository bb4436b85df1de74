//go:build amd64 && !race

package ring

import (
	"sync/atomic"
	"unsafe"
)

// publishIndex stores v into a word of the mapping that publishes (the
// head, or a record's header) and then fences, like word.Store: the store
// is ordered before the loads that follow it (the peer's park word). It is
// a plain store followed by a locked no-op rather than XCHG, which
// word.Store compiles to: XCHG first waits for every earlier store (the
// record just written) to reach the cache and only then asks for the
// word's line, one cross-core transfer after the other; a plain store lets
// the processor fetch the lines at once, and the fence then waits for
// them together. Without the race detector only: its
// happens-before edges come from sync/atomic's calls.
func publishIndex(word *atomic.Uint64, v uint64) {
	// An atomic.Uint64 is its value, behind fields of size zero.
	storeFenced((*uint64)(unsafe.Pointer(word)), v)
}

//go:noescape
func storeFenced(addr *uint64, v uint64)

// The conversion above needs the value to be the whole atomic.Uint64.
var (
	_ [unsafe.Sizeof(atomic.Uint64{}) - 8]byte
	_ [8 - unsafe.Sizeof(atomic.Uint64{})]byte
)
