//go:build linux

package uds

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Seams: tests swap these to inject filesystem types and group changes.
var (
	sysFstatfs  = unix.Fstatfs
	sysFchownat = unix.Fchownat
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

// Filesystem types on which a socket file is impossible or reachable only
// from the host that bound it.
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

// openSocketDir returns an O_PATH descriptor of dir after checking it: not
// a symlink, owned by us, closed to others as far as the socket mode
// requires, and on a filesystem fit for sockets. A missing dir is created
// with its final mode (its parent must exist); an existing one is never
// chmodded or chowned.
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
