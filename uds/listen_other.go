//go:build !linux

package uds

import (
	"errors"
	"net"
	"time"
)

// pathClaim is empty: no path can be claimed on this system.
type pathClaim struct{}

func openListener(string, []Option) (*Listener, error) { return nil, errors.ErrUnsupported }

func (l *Listener) accept() (*net.UnixConn, Cred, error) {
	return nil, Cred{}, errors.ErrUnsupported
}

func (l *Listener) acceptFD() (int, Cred, error) { return -1, Cred{}, errors.ErrUnsupported }

func (l *Listener) tryAcceptFD() (int, Cred, error) { return -1, Cred{}, errors.ErrUnsupported }

func (l *Listener) waiting() bool { return false }

func (l *Listener) setDeadline(time.Time) error { return errors.ErrUnsupported }

func (l *Listener) close() error { return errors.ErrUnsupported }
