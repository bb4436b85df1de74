//go:build linux

package uds

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// startWatch starts the theft watch of a listener at a path: its inotify
// watches are in place when it returns, so a change made after Listen
// returns is reported.
func (l *Listener) startWatch(interval time.Duration) {
	changed, stop := l.notify()
	l.wg.Add(1)
	go l.watch(interval, changed, stop)
}

// watch checks the path until Close or theft: at once when inotify
// reports a change that can move the path off our socket (the name
// unlinked, renamed or replaced in its directory; the directory, or one
// above it, moved or deleted), and every interval for what inotify does
// not report (a mount over the directory, a symbolic link above it
// changed). Without inotify (none left for this user) the interval is at
// most pollOnlyInterval.
func (l *Listener) watch(interval time.Duration, changed <-chan struct{}, stop func()) {
	defer l.wg.Done()
	defer stop()
	if changed == nil {
		interval = min(interval, pollOnlyInterval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-changed:
			l.notified.Add(1)
		}
		if l.checkStolen() {
			return
		}
	}
}

// pollOnlyInterval bounds the watch interval where no inotify instance
// can be had: the timer alone then has to notice a theft within a second,
// with room for scheduling delays.
const pollOnlyInterval = 250 * time.Millisecond

// Inotify events that can change what the path names: in the socket's
// directory, the name unlinked, renamed away, or something put in its
// place; on that directory and every one above it, the directory itself
// moved or deleted. Entries of the directories above are not watched: a
// busy directory such as /tmp would wake the watcher for every file.
const (
	nameEvents = unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_CREATE
	selfEvents = unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
)

// notify starts the inotify watches for the path and a goroutine that
// reads their events; the returned channel receives when one may concern
// the path (or the queue overflowed). stop ends the goroutine and closes
// the instance. A nil channel (abstract address, no inotify) never
// receives.
func (l *Listener) notify() (changed <-chan struct{}, stop func()) {
	if l.abs == "" {
		return nil, func() {}
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		l.log.Debug("uds: no inotify for the theft watch; polling", slog.String("path", l.path), slog.Any("err", err))
		return nil, func() {}
	}
	dir, name := filepath.Dir(l.abs), filepath.Base(l.abs)
	wd, err := unix.InotifyAddWatch(fd, dir, nameEvents|selfEvents|unix.IN_ONLYDIR)
	if err != nil {
		unix.Close(fd)
		l.log.Debug("uds: cannot watch the socket's directory; polling", slog.String("path", l.path), slog.Any("err", err))
		return nil, func() {}
	}
	for d := dir; d != filepath.Dir(d); {
		d = filepath.Dir(d)
		// Best effort: a directory above that cannot be watched is left
		// to the timer.
		_, _ = unix.InotifyAddWatch(fd, d, selfEvents|unix.IN_ONLYDIR)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: read in the netpoller
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf [4096]byte
		for {
			n, err := f.Read(buf[:])
			if err != nil {
				return // closed by stop
			}
			if concernsPath(buf[:n], int32(wd), name) {
				select {
				case ch <- struct{}{}:
				default: // a check is pending already
				}
			}
		}
	}()
	return ch, func() {
		f.Close()
		<-done
	}
}

// concernsPath reports whether a buffer of inotify events holds one that
// may change what the path names: any event of a directory above (only
// self events are asked for there), a self event or overflow, or an
// event for the socket's name in its directory (watch wd).
func concernsPath(buf []byte, wd int32, name string) bool {
	for len(buf) >= unix.SizeofInotifyEvent {
		ev := int32(binary.NativeEndian.Uint32(buf[0:]))
		mask := binary.NativeEndian.Uint32(buf[4:])
		n := int(binary.NativeEndian.Uint32(buf[12:]))
		end := unix.SizeofInotifyEvent + n
		if n < 0 || end > len(buf) {
			return true // cannot happen; check rather than miss a theft
		}
		evName := buf[unix.SizeofInotifyEvent:end]
		if i := bytes.IndexByte(evName, 0); i >= 0 {
			evName = evName[:i]
		}
		switch {
		case ev != wd, mask&(selfEvents|unix.IN_Q_OVERFLOW|unix.IN_IGNORED|unix.IN_UNMOUNT) != 0:
			return true
		case string(evName) == name:
			return true
		}
		buf = buf[end:]
	}
	return false
}

// checkStolen reports whether the path no longer names our socket: lstat
// fails (deleted, directory renamed), the path is no longer a socket, or
// (dev, ino) differ. It records the first finding. git's rule, checked
// when the watch sees a change, every watch interval and after accept
// errors instead of after 60 s idle.
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
