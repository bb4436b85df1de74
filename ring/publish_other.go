//go:build !amd64 || race

package ring

import "sync/atomic"

// publishIndex stores v into a word of the mapping that publishes (the
// head, or a record's header), ordered before the loads that follow it
// (the peer's park word).
func publishIndex(word *atomic.Uint64, v uint64) { word.Store(v) }
