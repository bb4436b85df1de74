//go:build !linux

package uds

import (
	"context"
	"errors"
	"net"
)

// State is not supported on this platform; it reports OtherError.
func State(path string) ActiveState { return OtherError }

// Dial is not supported on this platform.
func Dial(ctx context.Context, path string, opts ...DialOption) (*net.UnixConn, error) {
	return nil, &DialError{Path: path, State: OtherError, Err: errors.ErrUnsupported}
}
