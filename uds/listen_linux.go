//go:build linux

package uds

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Seams: tests swap these to inject filesystem types, accept errors, group
// changes, and to observe denied connections before they are closed.
var (
	sysFstatfs  = unix.Fstatfs
	sysFchownat = unix.Fchownat
	acceptUnix  = (*net.UnixListener).AcceptUnix
	closeDenied = func(c *net.UnixConn) error { return c.Close() }
)

// umaskMu serialises this package's umask changes. The umask is
// process-wide, so while a socket or directory is being created (a few
// microseconds) files created by other goroutines get our mask too. We only
// ever add bits to the process umask, so such files come out at most
// tighter than intended, never looser.
var umaskMu sync.Mutex

// withUmask runs create with the process umask plus the bits that mode
// does not grant. Bits the process umask removes from mode are added back
// afterwards by finishMode, through a handle.
func withUmask(mode os.FileMode, create func() error) error {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := unix.Umask(0o777) // the tightest mask while we read the old one
	unix.Umask(old | int(^mode&0o777))
	err := create()
	unix.Umask(old)
	return err
}

// Listener is a Unix-socket listener that owns its path: it serialises
// start-up with a flock'ed lock file held for its life, watches for theft,
// checks peer credentials before handing out a connection, and unlinks the
// path on Close only if the path still names its socket.
type Listener struct {
	ul      *net.UnixListener
	path    string // as given to Listen ("@name" when abstract)
	abs     string // absolute path, lstat'ed by the theft checks; "" when abstract
	addr    *net.UnixAddr
	dirfd   int    // O_PATH descriptor of the validated directory; -1 when abstract
	base    string // socket name inside dirfd
	lockfd  int    // the flock'ed lock file; -1 when abstract
	lock    string // its name inside dirfd
	dev     uint64 // identity of the socket file, recorded right after bind
	ino     uint64
	policy  Policy
	passRts bool
	log     *slog.Logger

	denied     atomic.Uint64
	denyLogAt  atomic.Int64 // monotonic ns (since born) before which denials are not logged
	denySilent atomic.Uint64
	born       time.Time

	stolen     chan struct{}
	stolenOnce sync.Once
	stolenErr  atomic.Pointer[error]

	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	wg        sync.WaitGroup
}

// Listen creates a listening Unix socket at path and owns the path while
// the Listener lives.
//
// In order:
//   - the directory is opened O_PATH|O_NOFOLLOW (created with its final
//     mode if it is missing; its parent must exist) and refused unless it is
//     owned by us, unwritable by group and others, entirely private when the
//     socket is (WithInsecureDir skips this), and on a local filesystem;
//   - an exclusive flock on path+LockSuffix serialises starters: of any
//     number racing, exactly one wins and the others get *InUseError at
//     once; the lock is held for the Listener's life and dies with the
//     process, so a crash never blocks the next start;
//   - if the path is a socket it is probed with a connect: a live server
//     (ours, or git's, which does not use the flock) gives *InUseError and
//     nothing is touched; a dead socket is unlinked. Anything else at the
//     path gives ErrNotSocket and is never touched;
//   - the socket is bound under a short start-up name in the directory
//     (through /proc/self/fd/<dirfd>/, so long paths work without chdir),
//     with its mode in place at creation, listens, and is then renamed to
//     the path without replacing anything there. Clients therefore never see
//     the path before it accepts connections.
//
// A basename longer than MaxPathLen, which git's clients could not reach,
// gives *PathTooLongError, as does a path longer than MaxPathLen on a system
// without /proc. Every descriptor is close-on-exec. The socket's own address
// (getsockname, and LocalAddr of accepted connections) is the /proc route it
// was bound through; Addr returns the path.
func Listen(path string, opts ...Option) (*Listener, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if o.abstract {
		return listenAbstract(path, o)
	}
	return listenPath(path, o)
}

func newListener(ul *net.UnixListener, path string, o *options) *Listener {
	return &Listener{
		ul:      ul,
		path:    path,
		addr:    &net.UnixAddr{Name: path, Net: "unix"},
		dirfd:   -1,
		lockfd:  -1,
		policy:  o.policy,
		passRts: o.passRights,
		log:     o.logger,
		born:    time.Now(),
		stolen:  make(chan struct{}),
		stop:    make(chan struct{}),
	}
}

func listenPath(path string, o *options) (_ *Listener, err error) {
	if path == "" || strings.IndexByte(path, 0) >= 0 {
		return nil, fmt.Errorf("%w: %q", ErrInvalidPath, path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("uds: listen %s: %w", path, err)
	}
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	if base == "/" || base == "." || base == ".." {
		return nil, fmt.Errorf("%w: %q: no socket name after the directory", ErrInvalidPath, path)
	}
	// git's clients reach a long path by chdir into its directory and
	// connecting to the basename, so the basename must fit in sun_path.
	if len(base) > MaxPathLen {
		return nil, &PathTooLongError{Path: path, Len: len(base), Max: MaxPathLen, Basename: true}
	}
	if !procAvailable() && len(abs) > MaxPathLen {
		return nil, &PathTooLongError{Path: path, Len: len(abs), Max: MaxPathLen}
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
	l.abs, l.dirfd, l.base, l.lockfd, l.lock, l.dev, l.ino = abs, dirfd, base, lockfd, lock, dev, ino
	l.wg.Add(1)
	go l.watch(o.watch)
	return l, nil
}

// dirName is the validated socket directory: its O_PATH descriptor, and
// its path for systems without /proc.
type dirName struct {
	fd   int
	path string
}

// addr returns a sockaddr name for name inside the directory, or "" when
// none fits in sun_path. The /proc route reaches the directory we
// validated even if a path component is swapped afterwards.
func (d dirName) addr(name string) string {
	if procAvailable() {
		if route := procFD(d.fd) + "/" + name; len(route) <= MaxPathLen {
			return route
		}
		return ""
	}
	if p := d.path + "/" + name; len(p) <= MaxPathLen {
		return p
	}
	return ""
}

// connect makes one non-blocking connect to the socket name inside the
// directory, through an O_PATH handle when the /proc route to the name
// itself is too long.
func (d dirName) connect(name string) (int, error) {
	if a := d.addr(name); a != "" {
		return connectAddr(a)
	}
	if !procAvailable() {
		p := d.path + "/" + name
		return -1, &PathTooLongError{Path: p, Len: len(p), Max: MaxPathLen}
	}
	h, err := unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("open", err)
	}
	defer unix.Close(h)
	return connectAddr(procFD(h))
}

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

// Filesystem types on which a socket file is impossible or reachable only
// from the host that bound it (faults.md D13).
var unfitFS = map[int64]string{
	unix.NFS_SUPER_MAGIC:   "NFS",
	unix.SMB_SUPER_MAGIC:   "SMB",
	unix.CIFS_SUPER_MAGIC:  "CIFS",
	unix.SMB2_SUPER_MAGIC:  "SMB2",
	unix.CEPH_SUPER_MAGIC:  "Ceph",
	unix.AFS_SUPER_MAGIC:   "AFS",
	unix.CODA_SUPER_MAGIC:  "Coda",
	unix.V9FS_MAGIC:        "9p",
	unix.MSDOS_SUPER_MAGIC: "FAT",
	unix.EXFAT_SUPER_MAGIC: "exFAT",
	0x5346544e:             "NTFS", // NTFS_SB_MAGIC (ntfs, ntfs-classic)
	0x7366746e:             "NTFS", // ntfs3
}

// openSocketDir returns an O_PATH descriptor of dir after checking it
// (faults.md D11-D13). A missing dir is created with its final mode (its
// parent must exist); an existing one is never chmodded or chowned.
func openSocketDir(dir string, o *options) (int, error) {
	flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !o.insecureDir {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(dir, flags, 0)
	if err == unix.ENOENT {
		if err := makeSocketDir(dir, o); err != nil {
			return -1, err
		}
		fd, err = unix.Open(dir, flags, 0)
	}
	if err != nil {
		if err == unix.ENOTDIR && !o.insecureDir {
			var st unix.Stat_t
			if unix.Lstat(dir, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return -1, &InsecureDirError{Dir: dir, UID: st.Uid, WantUID: uint32(os.Geteuid()),
					Mode: os.FileMode(st.Mode & 0o7777), Reason: "it is a symlink (pass the directory it points to)"}
			}
		}
		return -1, fmt.Errorf("uds: socket directory %s: %w", dir, err)
	}
	if err := checkSocketDir(fd, dir, o); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func checkSocketDir(fd int, dir string, o *options) error {
	var sfs unix.Statfs_t
	if err := sysFstatfs(fd, &sfs); err != nil {
		return fmt.Errorf("uds: statfs %s: %w", dir, err)
	}
	if name, bad := unfitFS[int64(sfs.Type)]; bad {
		return fmt.Errorf("%w: %s is on %s; put the socket on a local filesystem such as $XDG_RUNTIME_DIR",
			ErrUnsupportedFS, dir, name)
	}
	if o.insecureDir {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("uds: fstat %s: %w", dir, err)
	}
	euid := uint32(os.Geteuid())
	e := &InsecureDirError{Dir: dir, UID: st.Uid, WantUID: euid, Mode: os.FileMode(st.Mode & 0o7777)}
	switch {
	case st.Uid != euid:
		e.Reason = fmt.Sprintf("it is owned by uid %d, not by us", st.Uid)
	case st.Mode&0o022 != 0:
		e.Reason = "group or others can write to it, so they can replace the socket"
	case o.mode&0o077 == 0 && st.Mode&0o077 != 0:
		e.Reason = fmt.Sprintf("the socket is private (mode %04o) but group or others can enter the directory", uint32(o.mode))
	default:
		return nil
	}
	return e
}

// makeSocketDir creates the socket directory with its final mode and group
// in place before anyone else can enter it: it is made with no more than
// the owner bits, given its group through a no-follow handle, and only then
// opened up to the requested mode.
func makeSocketDir(dir string, o *options) error {
	create := o.dirMode
	if o.gid >= 0 {
		create &= 0o700
	}
	err := withUmask(create, func() error { return unix.Mkdir(dir, uint32(create)) })
	if err == unix.EEXIST {
		return nil // another starter made it; the checks decide
	}
	if err != nil {
		return fmt.Errorf("uds: create socket directory %s: %w", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("uds: open new socket directory %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return finishMode(fd, dir, o.dirMode, o.gid, unix.Fchmod)
}

// finishMode sets the group (if gid >= 0) and then the exact mode on the
// object behind fd, checking both afterwards. chmod is the way to apply the
// mode to fd (fchmod, or fchmodat on an O_PATH handle).
func finishMode(fd int, name string, mode os.FileMode, gid int, chmod func(fd int, mode uint32) error) error {
	if gid >= 0 {
		if err := sysFchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("uds: set group of %s to gid %d: %w", name, gid, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("uds: fstat %s: %w", name, err)
	}
	if gid >= 0 && st.Gid != uint32(gid) {
		return fmt.Errorf("uds: %s has gid %d, want gid %d", name, st.Gid, gid)
	}
	if os.FileMode(st.Mode&0o777) != mode {
		if err := chmod(fd, uint32(mode)); err != nil {
			return fmt.Errorf("uds: set mode of %s to %04o: %w", name, uint32(mode), err)
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("uds: fstat %s: %w", name, err)
		}
		if got := os.FileMode(st.Mode & 0o777); got != mode {
			return fmt.Errorf("uds: %s has mode %04o, want %04o", name, uint32(got), uint32(mode))
		}
	}
	return nil
}

// chmodHandle changes the mode of the inode behind an O_PATH handle, never
// following a symlink: fchmodat2(AT_EMPTY_PATH) on Linux 6.6+, otherwise
// chmod on the handle's /proc/self/fd name (which resolves to the inode the
// handle holds, not to a path).
func chmodHandle(h int, mode uint32) error {
	err := unix.Fchmodat(h, "", mode, unix.AT_EMPTY_PATH)
	if err == nil || (err != unix.ENOSYS && err != unix.EOPNOTSUPP && err != unix.EINVAL) {
		return err
	}
	if !procAvailable() {
		return err
	}
	return unix.Chmod(procFD(h), mode)
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

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "non-socket"
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
	h, err := unix.Openat(at.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("uds: open bound socket %s: %w", path, err)
	}
	defer unix.Close(h)
	var st unix.Stat_t
	if err := unix.Fstat(h, &st); err != nil {
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

// listenAbstract binds an abstract name (faults.md D3). On EADDRINUSE it
// probes the name and names the owner's uid.
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
	if !o.passRights {
		if err := refusePassRights(fd); err != nil {
			return nil, err
		}
	}
	ul, err := fileListener(fd)
	fd = -1 // owned (and on error closed) by fileListener
	if err != nil {
		return nil, fmt.Errorf("uds: listen %s: %w", addr, err)
	}
	return newListener(ul, addr, o), nil
}

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

// AcceptUnix waits for the next connection whose peer passes the policy and
// returns it with the peer's credentials. Peers that fail the policy, or
// whose credentials cannot be read, are closed before any byte is read and
// counted (Denied). Accept errors are returned as the net package gives
// them (errors.Is(err, syscall.EMFILE) works; the caller backs off) and
// trigger a theft check; after Close the error matches net.ErrClosed.
// SO_PASSRIGHTS is off on the connection unless WithPassRights(true).
// Safe for concurrent use; Close from any goroutine unblocks it.
func (l *Listener) AcceptUnix() (*net.UnixConn, Cred, error) {
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
// applies the policy. Any failure denies (faults.md E2).
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

// SetDeadline sets the time after which a waiting AcceptUnix returns an
// error matching os.ErrDeadlineExceeded; the zero time means no deadline.
// The engine uses it to take one waiting client without blocking when the
// descriptor table is full. Safe for concurrent use.
func (l *Listener) SetDeadline(t time.Time) error { return l.ul.SetDeadline(t) }

// Accept is AcceptUnix for the net.Listener interface; the connection is a
// *net.UnixConn. Safe for concurrent use.
func (l *Listener) Accept() (net.Conn, error) {
	c, _, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Addr returns the path as given to Listen ("@name" when abstract), not the
// /proc route the socket was bound through. Safe for concurrent use.
func (l *Listener) Addr() net.Addr { return l.addr }

// Path returns the path as given to Listen. Safe for concurrent use.
func (l *Listener) Path() string { return l.path }

// Stolen returns a channel closed once the path is found no longer naming
// this listener's socket (stolen, deleted, directory renamed: faults.md D8,
// D9); the listener then serves nobody new, and its owner should stop. It
// is never closed for an abstract name, nor by Close. Safe for concurrent use.
func (l *Listener) Stolen() <-chan struct{} { return l.stolen }

// StolenErr says why Stolen was closed (it wraps ErrStolen), or nil. Safe
// for concurrent use.
func (l *Listener) StolenErr() error {
	if p := l.stolenErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Denied returns how many peers the policy refused. Safe for concurrent use.
func (l *Listener) Denied() uint64 { return l.denied.Load() }

// Close stops the theft watcher and waits for it, closes the socket, and
// unlinks the socket file only if it is still a socket with the (dev, ino)
// recorded at bind (so a thief's socket survives; our own socket is
// removed even if its directory was renamed), then deletes and releases the
// lock file. It is idempotent: later calls return the first call's result.
// Safe for concurrent use; it unblocks AcceptUnix.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.closing.Store(true)
		close(l.stop)
		l.wg.Wait()
		// Unlink while the socket is still bound: the bound socket pins its
		// inode, so no other file can have its number yet and the identity
		// check is sound. Then close, then let the next starter in.
		if l.dirfd >= 0 {
			unlinkIfOurs(l.dirfd, l.base, l.dev, l.ino)
		}
		err := l.ul.Close()
		if l.dirfd >= 0 {
			releaseLock(l.dirfd, l.lock, l.lockfd)
			unix.Close(l.dirfd)
		}
		if err != nil {
			l.closeErr = fmt.Errorf("uds: close %s: %w", l.path, err)
		}
	})
	return l.closeErr
}
