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
