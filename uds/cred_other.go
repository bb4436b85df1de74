//go:build !linux

package uds

import (
	"errors"
	"net"
)

func peerCred(*net.UnixConn) (Cred, error) { return Cred{}, errors.ErrUnsupported }
