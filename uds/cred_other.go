//go:build !linux

package uds

import (
	"errors"
	"net"
)

// PeerCred is not supported on this platform.
func PeerCred(c *net.UnixConn) (Cred, error) { return Cred{}, errors.ErrUnsupported }
