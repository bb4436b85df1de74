//go:build !linux

package uds

import (
	"context"
	"errors"
	"net"
)

func state(string) ActiveState { return OtherError }

func dial(_ context.Context, path string, _ []DialOption) (*net.UnixConn, error) {
	return nil, &DialError{Path: path, State: OtherError, Err: errors.ErrUnsupported}
}

func dialFD(_ context.Context, path string, _ []DialOption) (int, error) {
	return -1, &DialError{Path: path, State: OtherError, Err: errors.ErrUnsupported}
}
