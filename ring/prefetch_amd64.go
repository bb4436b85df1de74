package ring

// prefetchWrite asks for the cache lines of n bytes at p for writing,
// without waiting for them.
//
//go:noescape
func prefetchWrite(p *byte, n uintptr)

// prefetchRead asks for the cache lines of n bytes at p for reading,
// without waiting for them.
//
//go:noescape
func prefetchRead(p *byte, n uintptr)
