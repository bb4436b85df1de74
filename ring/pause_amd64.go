package ring

// spinPause tells the processor that this is a spin-wait loop (PAUSE):
// the loop's loads stop competing with the peer's store to the same
// cache line, and a sibling hardware thread gets the core meanwhile.
//
//go:noescape
func spinPause()
