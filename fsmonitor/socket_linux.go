package fsmonitor

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fsKind classifies the filesystem holding path by its statfs magic.
func fsKind(path string) (int, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, os.NewSyscallError("statfs", err)
	}
	switch uint32(st.Type) {
	case unix.NFS_SUPER_MAGIC, unix.SMB_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC,
		unix.AFS_SUPER_MAGIC, unix.AFS_FS_MAGIC, unix.CODA_SUPER_MAGIC, unix.FUSE_SUPER_MAGIC:
		return fsRemote, nil
	case unix.MSDOS_SUPER_MAGIC, 0x5346544e: // NTFS (ntfs, ntfs3)
		return fsNoSockets, nil
	}
	return fsLocal, nil
}

// checkSocketDir refuses a socket directory that someone else could swap
// the socket in: one that is a symbolic link, owned by another user, or
// writable by others without the sticky bit. A group-writable git
// directory (core.sharedRepository) is accepted, as git accepts it.
func checkSocketDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("fsmonitor: socket directory: %w", os.NewSyscallError("lstat", err))
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("fsmonitor: socket directory %s is not a directory", dir)
	case st.Uid != uint32(os.Geteuid()):
		return fmt.Errorf("fsmonitor: socket directory %s belongs to uid %d", dir, st.Uid)
	case st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0:
		return fmt.Errorf("fsmonitor: socket directory %s is writable by others", dir)
	}
	return nil
}
