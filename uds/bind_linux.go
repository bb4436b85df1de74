//go:build linux

package uds

import (
	"fmt"
	"hash/fnv"

	"golang.org/x/sys/unix"
)

// tmpName is the name the socket is bound and set up under before it is
// renamed into place, so that the path appears only once the socket
// listens with its final mode and group. Its length is fixed (its /proc
// route always fits in sun_path) and it is derived from the socket name, so
// a start-up that died half-way leaves a name the next starter, holding the
// same lock, finds and clears.
func tmpName(base string) string {
	h := fnv.New64a()
	h.Write([]byte(base))
	return fmt.Sprintf(".pktipc-%016x", h.Sum64())
}

// bindSocket creates the listening socket and publishes it at base. It is
// bound under tmp with a umask that leaves it no more than its final mode
// (owner bits only while a group is still to be set), listens, gets its
// group and exact mode through an O_PATH|O_NOFOLLOW handle (which also
// gives its identity), and only then is renamed to base, refusing to
// replace anything there. So the path appears complete: listening, with its
// final mode and group. It returns the descriptor and the identity.
func bindSocket(path string, at dirName, base, tmp string, o *options) (int, uint64, uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, 0, 0, fmt.Errorf("uds: socket: %w", err)
	}
	dev, ino, err := bindAt(fd, path, at, base, tmp, o)
	if err != nil {
		unix.Close(fd)
		return -1, 0, 0, err
	}
	return fd, dev, ino, nil
}

// bindAt does bindSocket's work on fd. On failure it removes the socket
// file it made; the caller closes fd.
func bindAt(fd int, path string, at dirName, base, tmp string, o *options) (dev, ino uint64, err error) {
	if !o.passRights {
		if err := refusePassRights(fd); err != nil {
			return 0, 0, err
		}
	}
	// Without /proc the start-up name may not fit where the path does: bind
	// in place then (the path then exists a moment before it listens, as
	// with git's server).
	name, addr := tmp, at.addr(tmp)
	if addr == "" {
		name, addr = base, at.addr(base)
	}
	if addr == "" {
		return 0, 0, &PathTooLongError{Path: path, Len: len(at.path) + 1 + len(base), Max: MaxPathLen}
	}
	create := o.mode
	if o.gid >= 0 {
		create &= 0o700
	}
	if err := withUmask(create, func() error { return unix.Bind(fd, &unix.SockaddrUnix{Name: addr}) }); err != nil {
		if err == unix.EADDRINUSE {
			// Something appeared after reclaim looked: a starter that ignores
			// our lock (git), or a file someone created.
			var st unix.Stat_t
			if unix.Fstatat(at.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && !isSock(&st) {
				return 0, 0, fmt.Errorf("%w: %s is a %s; refusing to replace it", ErrNotSocket, path, fileKind(st.Mode))
			}
			return 0, 0, &InUseError{Path: path}
		}
		return 0, 0, fmt.Errorf("uds: bind %s: %w", path, err)
	}
	h, err := sysOpenat(at.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		dropStartName(at, name, tmp)
		return 0, 0, fmt.Errorf("uds: open bound socket %s: %w", path, err)
	}
	defer unix.Close(h)
	var st unix.Stat_t
	if err := unix.Fstat(h, &st); err != nil {
		dropStartName(at, name, tmp)
		return 0, 0, fmt.Errorf("uds: fstat %s: %w", path, err)
	}
	if !isSock(&st) {
		return 0, 0, fmt.Errorf("%w: %s changed under us during bind", ErrStolen, path)
	}
	dev, ino = uint64(st.Dev), uint64(st.Ino)
	if err := setupBound(fd, h, path, at, base, name, o); err != nil {
		unlinkIfOurs(at.fd, name, dev, ino)
		return 0, 0, err
	}
	return dev, ino, nil
}

// sysOpenat is unix.Openat; the tests make it fail.
var sysOpenat = unix.Openat

// dropStartName removes the socket just bound at name when its identity
// could not be read (out of descriptors, say), if name is the start-up
// name: no one else binds there while this starter holds the lock. At the
// final name it could be someone else's by now, and is left to the next
// starter's reclaim.
func dropStartName(at dirName, name, tmp string) {
	if name == tmp {
		unix.Unlinkat(at.fd, name, 0)
	}
}

// setupBound finishes the socket bound at name (handle h) and publishes it
// at base.
func setupBound(fd, h int, path string, at dirName, base, name string, o *options) error {
	if err := finishMode(h, path, o.mode, o.gid, chmodHandle); err != nil {
		return err
	}
	if err := unix.Listen(fd, o.backlog); err != nil {
		return fmt.Errorf("uds: listen %s: %w", path, err)
	}
	if name == base {
		return nil
	}
	return publish(path, at, name, base)
}

// publish renames tmp to base without replacing anything at base
// (renameat2 RENAME_NOREPLACE; link(2), which also refuses an existing
// name, where the filesystem lacks the flag).
func publish(path string, at dirName, tmp, base string) error {
	err := unix.Renameat2(at.fd, tmp, at.fd, base, unix.RENAME_NOREPLACE)
	if err == unix.EINVAL || err == unix.ENOSYS {
		if err = unix.Linkat(at.fd, tmp, at.fd, base, 0); err == nil {
			unix.Unlinkat(at.fd, tmp, 0)
		}
	}
	if err == nil {
		return nil
	}
	if err != unix.EEXIST {
		return fmt.Errorf("uds: rename the new socket to %s: %w", path, err)
	}
	// Something appeared at the path after reclaim looked: a starter that
	// ignores our lock (git), or a file someone created.
	var st unix.Stat_t
	if unix.Fstatat(at.fd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && !isSock(&st) {
		return fmt.Errorf("%w: %s is a %s; refusing to replace it", ErrNotSocket, path, fileKind(st.Mode))
	}
	return &InUseError{Path: path, Owner: probeOwner(at, base)}
}
