package ring

// prefetchWrite asks for the cache lines of n bytes at p for writing,
// without waiting for them.
//
//go:noescape
func prefetchWrite(p *byte, n uintptr)
