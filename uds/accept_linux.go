//go:build linux

package uds

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// Seams: tests swap these to inject accept errors and to observe denied
// connections before they are closed.
var (
	acceptUnix  = (*net.UnixListener).AcceptUnix
	closeDenied = func(c *net.UnixConn) error { return c.Close() }
)

// accept is AcceptUnix: it returns the first admitted connection, closing
// and counting the denied ones before it.
func (l *Listener) accept() (*net.UnixConn, Cred, error) {
	for {
		c, err := acceptUnix(l.ul)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.checkStolen()
			}
			return nil, Cred{}, err
		}
		cred, err := l.admit(c)
		if err != nil {
			l.deny(c, cred, err)
			continue
		}
		return c, cred, nil
	}
}

// admit reads the peer's credentials, switches SO_PASSRIGHTS off and
// applies the policy. Any failure denies: a peer we cannot identify, or
// that could still push descriptors, is not let in.
func (l *Listener) admit(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var cred Cred
	var cerr, perr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = fdCred(int(fd))
		if cerr == nil && !l.passRts {
			perr = refusePassRights(int(fd))
		}
	}); err != nil {
		return Cred{}, err
	}
	if cerr != nil {
		return Cred{}, cerr
	}
	if perr != nil {
		return cred, perr
	}
	return cred, l.policy.Allow(cred)
}

// denyLogInterval limits denial log lines: a flood of foreign peers must not
// become a flood of log lines.
const denyLogInterval = time.Second

// deny closes a refused connection and counts it, logging at most one line
// per denyLogInterval with the number left unlogged since the last.
func (l *Listener) deny(c *net.UnixConn, cred Cred, why error) {
	l.denied.Add(1) // counted before the peer can see the close
	closeDenied(c)
	now := int64(time.Since(l.born))
	next := l.denyLogAt.Load()
	if now < next || !l.denyLogAt.CompareAndSwap(next, now+int64(denyLogInterval)) {
		l.denySilent.Add(1)
		return
	}
	l.log.Warn("uds: peer denied", slog.String("path", l.path),
		slog.Uint64("uid", uint64(cred.UID)), slog.Uint64("gid", uint64(cred.GID)), slog.Int64("pid", int64(cred.PID)),
		slog.Any("err", why), slog.Uint64("unlogged_before", l.denySilent.Swap(0)))
}

func (l *Listener) setDeadline(t time.Time) error { return l.ul.SetDeadline(t) }
