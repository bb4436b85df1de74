package uds

import "strconv"

// ActiveState is git's enum ipc_active_state, in git's order, with git's
// meanings.
type ActiveState int

const (
	// Listening: a server accepted (or queued) a connection.
	Listening ActiveState = iota
	// NotListening: State: the path is missing (ENOENT/ENOTDIR on lstat) or
	// is a socket that refuses connections. Dial: the server refused or was
	// busy, or all retries were used up.
	NotListening
	// InvalidPath: lstat failed other than ENOENT/ENOTDIR, or the path is
	// not a socket (a symlink counts as not a socket).
	InvalidPath
	// PathNotFound: connect said ENOENT (Dial without WaitIfNotFound, or the
	// socket vanished between State's lstat and its connect).
	PathNotFound
	// OtherError: any other connect error (EACCES, ENAMETOOLONG, ...).
	OtherError
)

// String returns git's meaning in a few words. Safe for concurrent use.
func (s ActiveState) String() string {
	switch s {
	case Listening:
		return "listening"
	case NotListening:
		return "not listening"
	case InvalidPath:
		return "invalid path"
	case PathNotFound:
		return "path not found"
	case OtherError:
		return "other error"
	}
	return "ActiveState(" + strconv.Itoa(int(s)) + ")"
}
