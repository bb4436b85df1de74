//go:build !amd64

package ring

func prefetchWrite(p *byte, n uintptr) {}
