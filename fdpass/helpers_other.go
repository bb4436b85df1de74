//go:build !linux

package fdpass

import (
	"context"
	"errors"
	"net"
	"os/exec"
)

// EnvFD names the environment variable through which StartChild tells a
// child process the number of its end of the socketpair.
const EnvFD = "PKTIPC_FDPASS_FD"

// Socketpair is not supported on this platform.
func Socketpair() (*net.UnixConn, *net.UnixConn, error) { return nil, nil, errors.ErrUnsupported }

// Pair is not supported on this platform.
func Pair(opts ...Option) (*Passer, *Passer, error) { return nil, nil, errors.ErrUnsupported }

// Listener is not supported on this platform.
type Listener struct{}

// Listen is not supported on this platform.
func Listen(path string, opts ...Option) (*Listener, error) { return nil, errors.ErrUnsupported }

// Addr returns nil on this platform.
func (l *Listener) Addr() net.Addr { return nil }

// Accept is not supported on this platform.
func (l *Listener) Accept(ctx context.Context) (*Passer, error) { return nil, errors.ErrUnsupported }

// Close is not supported on this platform.
func (l *Listener) Close() error { return errors.ErrUnsupported }

// Dial is not supported on this platform.
func Dial(ctx context.Context, path string, opts ...Option) (*Passer, error) {
	return nil, errors.ErrUnsupported
}

// StartChild is not supported on this platform.
func StartChild(cmd *exec.Cmd, opts ...Option) (*Passer, error) { return nil, errors.ErrUnsupported }

// FromEnv is not supported on this platform.
func FromEnv(opts ...Option) (*Passer, error) { return nil, errors.ErrUnsupported }

// RefuseFDs is not supported on this platform.
func RefuseFDs(conn *net.UnixConn) error { return errors.ErrUnsupported }
