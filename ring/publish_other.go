//go:build !amd64 || race

package ring

import "sync/atomic"

// publishIndex stores v into an index of the shared header, ordered before
// the loads that follow it (the peer's park word).
func publishIndex(word *atomic.Uint64, v uint64) { word.Store(v) }
