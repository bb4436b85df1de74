//go:build linux

package uds

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// openListener is Listen on Linux: an abstract name, or a path it claims.
func openListener(path string, opts []Option) (*Listener, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if o.abstract {
		return listenAbstract(path, o)
	}
	return listenPath(path, o)
}

// newListener wraps a listening socket; listenPath adds its claim on the
// path afterwards.
func newListener(ul *net.UnixListener, path string, o *options) *Listener {
	return &Listener{
		ul:        ul,
		path:      path,
		addr:      &net.UnixAddr{Name: path, Net: "unix"},
		pathClaim: pathClaim{dirfd: -1, lockfd: -1},
		policy:    o.policy,
		passRts:   o.passRights,
		log:       o.logger,
		born:      time.Now(),
		stolen:    make(chan struct{}),
		stop:      make(chan struct{}),
	}
}

// splitSocketPath checks a filesystem socket path and returns it made
// absolute, with its directory and the socket's name in it.
func splitSocketPath(path string) (abs, dir, base string, err error) {
	if path == "" || strings.IndexByte(path, 0) >= 0 {
		return "", "", "", fmt.Errorf("%w: %q", ErrInvalidPath, path)
	}
	abs, err = filepath.Abs(path)
	if err != nil {
		return "", "", "", fmt.Errorf("uds: listen %s: %w", path, err)
	}
	dir, base = filepath.Dir(abs), filepath.Base(abs)
	if base == "/" || base == "." || base == ".." {
		return "", "", "", fmt.Errorf("%w: %q: no socket name after the directory", ErrInvalidPath, path)
	}
	// git's clients reach a long path by chdir into its directory and
	// connecting to the basename, so the basename must fit in sun_path.
	if len(base) > MaxPathLen {
		return "", "", "", &PathTooLongError{Path: path, Len: len(base), Max: MaxPathLen, Basename: true}
	}
	if !procAvailable() && len(abs) > MaxPathLen {
		return "", "", "", &PathTooLongError{Path: path, Len: len(abs), Max: MaxPathLen}
	}
	return abs, dir, base, nil
}

// listenPath claims path: the directory checks, the start-up lock, the
// stale socket (if any), then the bind; it undoes each step if a later
// one fails.
func listenPath(path string, o *options) (_ *Listener, err error) {
	abs, dir, base, err := splitSocketPath(path)
	if err != nil {
		return nil, err
	}
	dirfd, err := openSocketDir(dir, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unix.Close(dirfd)
		}
	}()
	at := dirName{fd: dirfd, path: dir}
	lock := base + LockSuffix
	lockfd, err := acquireLock(path, dirfd, lock)
	if err != nil {
		if iu, ok := err.(*InUseError); ok {
			iu.Owner = probeOwner(at, base) // name the holder if it already serves
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			releaseLock(dirfd, lock, lockfd)
		}
	}()
	if err := reclaim(path, at, base, o.logger); err != nil {
		return nil, err
	}
	tmp := tmpName(base)
	if err := reclaim(filepath.Join(dir, tmp), at, tmp, o.logger); err != nil {
		return nil, fmt.Errorf("uds: listen %s: start-up name: %w", path, err)
	}
	fd, dev, ino, err := bindSocket(path, at, base, tmp, o)
	if err != nil {
		return nil, err
	}
	ul, err := fileListener(fd)
	if err != nil {
		unlinkIfOurs(dirfd, base, dev, ino)
		return nil, fmt.Errorf("uds: listen %s: %w", path, err)
	}
	l := newListener(ul, path, o)
	if !o.passRights {
		if rc, err := ul.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { l.rightsOff = rightsOffOn(int(fd)) })
		}
	}
	l.pathClaim = pathClaim{abs: abs, dirfd: dirfd, base: base, lockfd: lockfd, lock: lock, dev: dev, ino: ino}
	l.startWatch(o.watch)
	return l, nil
}

// fileListener wraps a listening socket, taking ownership of fd. A listener
// made by net.FileListener does not unlink its path on Close; we say so
// again to be independent of that detail.
func fileListener(fd int) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), "uds-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("uds: descriptor is a %T, not a Unix listener", ln)
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// listenAbstract binds an abstract name (no file, no lock, nothing to
// watch). On EADDRINUSE it probes the name and names the owner's uid.
func listenAbstract(path string, o *options) (_ *Listener, err error) {
	name := strings.TrimPrefix(path, "@")
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("%w: abstract name %q", ErrInvalidPath, path)
	}
	if len(name) > MaxPathLen {
		return nil, &PathTooLongError{Path: "@" + name, Len: len(name), Max: MaxPathLen}
	}
	addr := "@" + name
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("uds: socket: %w", err)
	}
	defer func() {
		if err != nil && fd >= 0 {
			unix.Close(fd)
		}
	}()
	// The syscall package, unlike x/sys/unix, accepts all 107 bytes of an
	// abstract name.
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: addr}); err != nil {
		if err != unix.EADDRINUSE {
			return nil, fmt.Errorf("uds: bind %s: %w", addr, err)
		}
		e := &InUseError{Path: addr}
		if pfd, perr := connectAbstract(addr); perr == nil {
			if c, cerr := fdCred(pfd); cerr == nil {
				e.Owner = &c
			}
			unix.Close(pfd)
		}
		if e.Owner != nil {
			o.logger.Warn("uds: abstract name taken", slog.String("name", addr),
				slog.Uint64("owner_uid", uint64(e.Owner.UID)), slog.Int64("owner_pid", int64(e.Owner.PID)))
		}
		return nil, e
	}
	if err := unix.Listen(fd, o.backlog); err != nil {
		return nil, fmt.Errorf("uds: listen %s: %w", addr, err)
	}
	rightsOff := false
	if !o.passRights {
		if err := refusePassRights(fd); err != nil {
			return nil, err
		}
		rightsOff = rightsOffOn(fd)
	}
	ul, err := fileListener(fd)
	fd = -1 // owned (and on error closed) by fileListener
	if err != nil {
		return nil, fmt.Errorf("uds: listen %s: %w", addr, err)
	}
	l := newListener(ul, addr, o)
	l.rightsOff = rightsOff
	return l, nil
}

// close is Close's work, done once: stop the watcher, give up the path if
// it is still ours, close the socket, then release the lock.
func (l *Listener) close() error {
	l.closing.Store(true)
	close(l.stop)
	l.wg.Wait()
	// Unlink while the socket is still bound: the bound socket pins its
	// inode, so no other file can have its number yet and the identity
	// check is sound. Then close, then let the next starter in.
	if l.dirfd >= 0 {
		unlinkIfOurs(l.dirfd, l.base, l.dev, l.ino)
	}
	l.closeAcc()
	err := l.ul.Close()
	if l.dirfd >= 0 {
		releaseLock(l.dirfd, l.lock, l.lockfd)
		unix.Close(l.dirfd)
	}
	if err != nil {
		return fmt.Errorf("uds: close %s: %w", l.path, err)
	}
	return nil
}
