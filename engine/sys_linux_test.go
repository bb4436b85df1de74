package engine

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// setNofile sets RLIMIT_NOFILE's soft and hard limits to n.
func setNofile(n int) error {
	lim := syscall.Rlimit{Cur: uint64(n), Max: uint64(n)}
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// nofile returns RLIMIT_NOFILE's soft limit.
func nofile() (uint64, error) {
	var lim syscall.Rlimit
	err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur, err
}

// unixRights encodes fd as an SCM_RIGHTS control message.
func unixRights(fd int) []byte { return syscall.UnixRights(fd) }

// sendBufferOf reads a socket's SO_SNDBUF.
func sendBufferOf(uc *net.UnixConn) (int, error) {
	return fdInt(uc, func(fd int) (int, error) { return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF) })
}

// unreadOf returns the bytes written on uc that its peer has not read
// yet (SIOCOUTQ counts them on a Unix stream socket).
func unreadOf(uc *net.UnixConn) (int, error) {
	return fdInt(uc, func(fd int) (int, error) { return unix.IoctlGetInt(fd, unix.TIOCOUTQ) })
}

// fdInt is get's answer for uc's descriptor.
func fdInt(uc *net.UnixConn, get func(fd int) (int, error)) (int, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var gerr error
	if err := rc.Control(func(fd uintptr) { n, gerr = get(int(fd)) }); err != nil {
		return 0, err
	}
	return n, gerr
}

// wmemMax reads the kernel's cap on SO_SNDBUF.
func wmemMax() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/core/wmem_max")
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return n, err == nil
}
