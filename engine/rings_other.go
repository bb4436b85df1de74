//go:build !linux

package engine

import (
	"errors"
	"net"
	"os"
)

// ringsSupported: rings need memfd seals and SCM_RIGHTS (package ring),
// which this platform lacks; clients do not ask for them.
const ringsSupported = false

func writeWithFiles(*net.UnixConn, []byte, ...*os.File) error { return errors.ErrUnsupported }

func readWithRights(*net.UnixConn, []byte) (int, []int, error) {
	return 0, nil, errors.ErrUnsupported
}

func closeFDs([]int) {}
