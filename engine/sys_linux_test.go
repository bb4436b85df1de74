package engine

import "syscall"

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
