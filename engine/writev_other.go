//go:build !linux

package engine

import "errors"

// writevSupported: elsewhere payloads are copied behind their headers.
const writevSupported = false

type iovec struct{}

func (g *gather) writeSome(uintptr, *[]iovec) (bool, error) { return true, errors.ErrUnsupported }

// readInto reads into the first piece alone.
func readInto(fd uintptr, pieces [][]byte, _ []byte, _ *[]iovec) (int, error) {
	return sysRead(fd, pieces[0])
}
