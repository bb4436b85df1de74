//go:build linux

package uds

import (
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// procAvailable says whether /proc/self/fd can name descriptors; tests
// swap it to hide /proc.
var procAvailable = sync.OnceValue(func() bool {
	var st unix.Stat_t
	return unix.Stat("/proc/self/fd", &st) == nil
})

// procFD names descriptor fd through /proc. The kernel follows such a name
// to the open file itself (a "magic link"), whatever its path is now.
func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// isSock says whether st is a socket.
func isSock(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFSOCK }

// fileKind names a file type for error messages.
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
