//go:build !linux

package uds

import (
	"errors"
	"net"
	"time"
)

// Listener is not supported on this platform.
type Listener struct{}

// Listen is not supported on this platform.
func Listen(path string, opts ...Option) (*Listener, error) {
	return nil, errors.ErrUnsupported
}

// AcceptUnix is not supported on this platform.
func (l *Listener) AcceptUnix() (*net.UnixConn, Cred, error) {
	return nil, Cred{}, errors.ErrUnsupported
}

// Accept is not supported on this platform.
func (l *Listener) Accept() (net.Conn, error) { return nil, errors.ErrUnsupported }

// SetDeadline is not supported on this platform.
func (l *Listener) SetDeadline(t time.Time) error { return errors.ErrUnsupported }

// Addr is not supported on this platform; it returns nil.
func (l *Listener) Addr() net.Addr { return nil }

// Path is not supported on this platform; it returns "".
func (l *Listener) Path() string { return "" }

// Stolen is not supported on this platform; the channel is never closed.
func (l *Listener) Stolen() <-chan struct{} { return nil }

// StolenErr is not supported on this platform; it returns nil.
func (l *Listener) StolenErr() error { return nil }

// Denied is not supported on this platform; it returns 0.
func (l *Listener) Denied() uint64 { return 0 }

// Close is not supported on this platform.
func (l *Listener) Close() error { return errors.ErrUnsupported }
