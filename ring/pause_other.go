//go:build !amd64

package ring

// spinPause has no portable equivalent; the loop just spins.
func spinPause() {}
