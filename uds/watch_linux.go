//go:build linux

package uds

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// startWatch starts the theft watch of a listener at a path: its inotify
// watches are in place when it returns, so a change made after Listen
// returns is reported.
func (l *Listener) startWatch(interval time.Duration) {
	changed, complete, stop := l.notify()
	switch {
	case complete:
		interval = sweepInterval
	case changed == nil:
		interval = min(interval, pollOnlyInterval)
	}
	l.evented = complete
	l.wg.Add(1)
	go l.watch(interval, changed, stop)
}

// watch checks the path until Close or theft: at once when an event
// reports a change that can move the path off our socket (see notify), and
// every interval besides.
func (l *Listener) watch(interval time.Duration, changed <-chan struct{}, stop func()) {
	defer l.wg.Done()
	defer stop()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.ticks.Add(1)
		case <-changed:
			l.notified.Add(1)
		}
		if l.checkStolen() {
			return
		}
	}
}

// The timer's period. Where events cover every way the path can change,
// an idle listener must not wake each second (its process would pay a
// wake-up a second for nothing), and the timer is a slow sweep for what
// no event reports (an ancestor's permissions changed, which makes lstat
// fail), as git checks after 60 s idle. Without inotify the timer alone has
// to notice a theft within a second, with room for scheduling delays.
const (
	sweepInterval    = time.Minute
	pollOnlyInterval = 250 * time.Millisecond
)

// Inotify events that can change what the path names: in the socket's
// directory, the name unlinked, renamed away, or something put in its
// place, and likewise the name of every symbolic link the path goes
// through, in that link's directory; on all those directories and every
// one above them, the directory itself moved or deleted. Other entries of
// the directories above are not watched: a busy directory such as /tmp
// would wake the watcher for every file.
const (
	nameEvents = unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_CREATE
	selfEvents = unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
)

// notify starts the watches for the path and the goroutines that read
// their events; the returned channel receives when one may concern the
// path. Besides inotify, a change of the mount table (a mount over a
// directory on the path) is reported by the kernel's poll of
// /proc/self/mountinfo. complete says the events cover every change of
// what the path names but a change of permissions: the path resolved, every
// directory it goes through watched, on a local filesystem (where every
// change passes through this kernel), and the mount table watched. stop
// ends the goroutines and closes what they read. A nil channel (abstract
// address, no inotify) never receives.
func (l *Listener) notify() (changed <-chan struct{}, complete bool, stop func()) {
	if l.abs == "" {
		return nil, false, func() {}
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		l.log.Debug("uds: no inotify for the theft watch; polling", slog.String("path", l.path), slog.Any("err", err))
		return nil, false, func() {}
	}
	resolved, links, err := resolvePath(l.abs)
	complete = err == nil
	if err != nil {
		resolved, links = l.abs, nil // inotify follows the links; their changes are left to the timer
	}
	dir, name := filepath.Dir(resolved), filepath.Base(resolved)
	wd, err := unix.InotifyAddWatch(fd, dir, nameEvents|selfEvents|unix.IN_ONLYDIR)
	if err != nil {
		unix.Close(fd)
		l.log.Debug("uds: cannot watch the socket's directory; polling", slog.String("path", l.path), slog.Any("err", err))
		return nil, false, func() {}
	}
	names := map[int32][]string{int32(wd): {name}}
	dirs := []string{dir}
	for _, e := range links {
		wd, err := unix.InotifyAddWatch(fd, e.dir, nameEvents|unix.IN_MASK_ADD|unix.IN_ONLYDIR)
		if err != nil {
			complete = false
			continue
		}
		names[int32(wd)] = append(names[int32(wd)], e.name)
		dirs = append(dirs, e.dir)
	}
	seen := make(map[string]bool)
	for _, d := range dirs {
		for ; !seen[d]; d = filepath.Dir(d) {
			seen[d] = true
			_, err := unix.InotifyAddWatch(fd, d, selfEvents|unix.IN_MASK_ADD|unix.IN_ONLYDIR)
			complete = complete && err == nil && localFS(d)
		}
	}
	ch := make(chan struct{}, 1)
	signal := func() {
		select {
		case ch <- struct{}{}:
		default: // a check is pending already
		}
	}
	var wg sync.WaitGroup
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: read in the netpoller
	wg.Go(func() {
		var buf [4096]byte
		for {
			n, err := f.Read(buf[:])
			if err != nil {
				return // closed by stop
			}
			if concernsPath(buf[:n], names) {
				signal()
			}
		}
	})
	mounts := watchMounts(&wg, signal)
	complete = complete && mounts != nil
	return ch, complete, func() {
		f.Close()
		if mounts != nil {
			mounts.Close()
		}
		wg.Wait()
	}
}

// watchMounts calls signal, on a goroutine it adds to wg, whenever the
// mount table of this process's namespace changes (and once or twice at
// the start); closing the returned file ends it. The kernel's poll of
// /proc/self/mountinfo reports each change, so the goroutine waits in the
// netpoller and costs nothing meanwhile. nil: the table cannot be watched.
func watchMounts(wg *sync.WaitGroup, signal func()) *os.File {
	fd, err := unix.Open("/proc/self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "mountinfo")
	rc, err := f.SyscallConn()
	// A file the netpoller cannot wait on refuses deadlines.
	if err != nil || f.SetReadDeadline(time.Time{}) != nil {
		f.Close()
		return nil
	}
	wg.Go(func() {
		// Each call of the function is a wake: count every one a change.
		// The wait ends when f is closed.
		_ = rc.Read(func(uintptr) bool { signal(); return false })
	})
	return f
}

// localFS says whether dir is on a filesystem whose every change passes
// through this kernel, so that inotify reports it. Elsewhere (a network
// or FUSE filesystem) the timer watches the path.
func localFS(dir string) bool {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return false
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC,
		unix.RAMFS_MAGIC, unix.F2FS_SUPER_MAGIC, unix.OVERLAYFS_SUPER_MAGIC, unix.BCACHEFS_SUPER_MAGIC,
		0x2fc12fc1: // ZFS
		return true
	}
	return false
}

// dirEntry is a name in a directory.
type dirEntry struct{ dir, name string }

// maxLinks is the kernel's limit on the symbolic links one lookup follows.
const maxLinks = 40

// resolvePath resolves the absolute path p as the kernel does, component
// by component, following symbolic links in all but the last: it returns
// the path without links and every link followed (resolved directory,
// name), whose replacement would change what p names.
func resolvePath(p string) (string, []dirEntry, error) {
	rest := strings.Split(p, "/")
	cur := "/"
	var links []dirEntry
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		if len(rest) == 0 {
			cur = next // the socket itself
			break
		}
		var st unix.Stat_t
		if err := unix.Lstat(next, &st); err != nil {
			return "", nil, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			cur = next
			continue
		}
		if len(links) == maxLinks {
			return "", nil, unix.ELOOP
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", nil, err
		}
		links = append(links, dirEntry{cur, c})
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return cur, links, nil
}

// concernsPath reports whether a buffer of inotify events holds one that
// may change what the path names: a self event or overflow, any event of
// a directory above (only self events are asked for there), or an event
// for a name that matters in a directory whose entries are watched (names
// by watch).
func concernsPath(buf []byte, names map[int32][]string) bool {
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
		if mask&(selfEvents|unix.IN_Q_OVERFLOW|unix.IN_IGNORED|unix.IN_UNMOUNT) != 0 {
			return true
		}
		want, ok := names[ev]
		if !ok {
			return true
		}
		for _, w := range want {
			if string(evName) == w {
				return true
			}
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
