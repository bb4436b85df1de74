//go:build !amd64

package ring

func prefetchWrite(p *byte, n uintptr) {}

func prefetchRead(p *byte, n uintptr) {}
