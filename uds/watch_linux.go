//go:build linux

package uds

import (
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"
)

// watch checks the path every interval until Close or theft.
func (l *Listener) watch(interval time.Duration) {
	defer l.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if l.checkStolen() {
				return
			}
		}
	}
}

// checkStolen reports whether the path no longer names our socket: lstat
// fails (deleted, directory renamed), the path is no longer a socket, or
// (dev, ino) differ. It records the first finding. git's rule, checked
// every watch interval and after accept errors instead of after 60 s idle.
func (l *Listener) checkStolen() bool {
	if l.abs == "" || l.closing.Load() {
		return false
	}
	select {
	case <-l.stolen:
		return true
	default:
	}
	var st unix.Stat_t
	var why error
	switch err := unix.Lstat(l.abs, &st); {
	case err != nil:
		why = fmt.Errorf("%w: %s: lstat: %w", ErrStolen, l.path, err)
	case !isSock(&st):
		why = fmt.Errorf("%w: %s is now a %s", ErrStolen, l.path, fileKind(st.Mode))
	case uint64(st.Dev) != l.dev || uint64(st.Ino) != l.ino:
		why = fmt.Errorf("%w: %s now names another socket", ErrStolen, l.path)
	default:
		return false
	}
	l.stolenOnce.Do(func() {
		l.stolenErr.Store(&why)
		close(l.stolen)
		l.log.Warn("uds: socket stolen or removed; this listener is unreachable", slog.String("path", l.path), slog.Any("err", why))
	})
	return true
}
