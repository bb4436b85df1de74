//go:build linux

package uds

import (
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// pathClaim is what a listener on a filesystem path holds on disk: the
// validated directory, the start-up lock (held for the listener's life) and
// the identity of the socket it bound. listenPath fills it in before the
// Listener is shared; afterwards it is only read, and Close alone releases
// it. A listener on an abstract name claims nothing: dirfd and lockfd are
// -1 and abs is "".
type pathClaim struct {
	abs    string // absolute path, lstat'ed by the theft checks
	dirfd  int    // O_PATH descriptor of the validated directory
	base   string // socket name inside dirfd
	lockfd int    // the flock'ed lock file
	lock   string // its name inside dirfd
	dev    uint64 // identity of the socket file, recorded right after bind
	ino    uint64
}

// acquireLock takes an exclusive, non-blocking flock on the lock file. The
// holder deletes the file before releasing it (so nothing is left behind);
// a starter that locked a file that has meanwhile been deleted or replaced
// therefore checks, after locking, that the name still leads to the inode
// it locked, and otherwise tries again with the new file.
func acquireLock(path string, dirfd int, lock string) (int, error) {
	const attempts = 8 // each retry means a holder released just now; more is a loop
	for range attempts {
		fd, err := unix.Openat(dirfd, lock, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return -1, fmt.Errorf("uds: lock file %s%s: %w", path, LockSuffix, err)
		}
		var held unix.Stat_t
		if err := unix.Fstat(fd, &held); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("uds: lock file %s%s: %w", path, LockSuffix, err)
		}
		if held.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Close(fd)
			return -1, fmt.Errorf("uds: lock file %s%s is not a regular file", path, LockSuffix)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			if err == unix.EWOULDBLOCK {
				return -1, &InUseError{Path: path}
			}
			return -1, fmt.Errorf("uds: lock %s%s: %w", path, LockSuffix, err)
		}
		// A file deleted before we locked it has no links left; only then
		// may its inode number be reused, so with links left the number
		// comparison below is sound.
		if err := unix.Fstat(fd, &held); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("uds: lock file %s%s: %w", path, LockSuffix, err)
		}
		var now unix.Stat_t
		err = unix.Fstatat(dirfd, lock, &now, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && held.Nlink > 0 && now.Dev == held.Dev && now.Ino == held.Ino {
			return fd, nil
		}
		unix.Close(fd)
		if err != nil && err != unix.ENOENT {
			return -1, fmt.Errorf("uds: lock file %s%s: %w", path, LockSuffix, err)
		}
	}
	return -1, fmt.Errorf("uds: lock file %s%s keeps being replaced", path, LockSuffix)
}

// releaseLock deletes the lock file if it is still the one we hold, then
// releases it by closing it.
func releaseLock(dirfd int, lock string, lockfd int) {
	var held, now unix.Stat_t
	if unix.Fstat(lockfd, &held) == nil &&
		unix.Fstatat(dirfd, lock, &now, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		now.Dev == held.Dev && now.Ino == held.Ino {
		unix.Unlinkat(dirfd, lock, 0)
	}
	unix.Close(lockfd)
}

// reclaim makes a name in the socket directory free, under the lock:
// nothing there is fine; a live socket is in use; a dead one is unlinked
// (only the inode we probed); anything else is never touched.
func reclaim(path string, at dirName, name string, log *slog.Logger) error {
	var st unix.Stat_t
	err := unix.Fstatat(at.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("uds: lstat %s: %w", path, err)
	}
	if !isSock(&st) {
		return fmt.Errorf("%w: %s is a %s; refusing to replace it", ErrNotSocket, path, fileKind(st.Mode))
	}
	fd, err := at.connect(name)
	switch {
	case err == nil:
		e := &InUseError{Path: path}
		if c, cerr := fdCred(fd); cerr == nil {
			e.Owner = &c
		}
		unix.Close(fd)
		return e
	case errors.Is(err, unix.EAGAIN):
		return &InUseError{Path: path} // alive, its backlog full
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ENOENT):
	default:
		return fmt.Errorf("uds: probe %s: %w", path, err)
	}
	var again unix.Stat_t
	if err := unix.Fstatat(at.fd, name, &again, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return fmt.Errorf("uds: lstat %s: %w", path, err)
	}
	if again.Dev != st.Dev || again.Ino != st.Ino {
		// Replaced while we probed: a starter that ignores our lock (git).
		return &InUseError{Path: path}
	}
	if err := unix.Unlinkat(at.fd, name, 0); err != nil && err != unix.ENOENT {
		return fmt.Errorf("uds: remove stale socket %s: %w", path, err)
	}
	log.Info("uds: removed a dead socket", slog.String("path", path), slog.String("name", name))
	return nil
}

// probeOwner returns the credentials of the server answering at name in
// the directory, or nil when nobody answers.
func probeOwner(at dirName, name string) *Cred {
	fd, err := at.connect(name)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	c, err := fdCred(fd)
	if err != nil {
		return nil
	}
	return &c
}

// unlinkIfOurs removes base from dirfd only if it is still the socket
// (dev, ino). No system call removes a name only if it names a given
// inode, so a replacement between the check and the unlink (microseconds,
// and only by someone who may write the directory) cannot be excluded.
func unlinkIfOurs(dirfd int, base string, dev, ino uint64) {
	var st unix.Stat_t
	if unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) != nil ||
		!isSock(&st) || uint64(st.Dev) != dev || uint64(st.Ino) != ino {
		return
	}
	unix.Unlinkat(dirfd, base, 0)
}
