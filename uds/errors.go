package uds

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Sentinel errors. Match them with errors.Is; the typed errors below say more.
var (
	// ErrInUse: a live server owns the path (or the name, or our start-up
	// lock). Listen touched nothing. Returned as *InUseError.
	ErrInUse = errors.New("uds: socket in use by a live server")
	// ErrNotSocket: the path exists and is not a socket (a file, directory,
	// symlink, FIFO). Listen never unlinks it.
	ErrNotSocket = errors.New("uds: path exists and is not a socket")
	// ErrNotListening: the path is a socket nobody accepts on (Dial).
	ErrNotListening = errors.New("uds: no server is listening")
	// ErrNotFound: the path does not exist (Dial).
	ErrNotFound = errors.New("uds: socket path not found")
	// ErrInsecureDir: the socket directory is not private enough. Returned
	// as *InsecureDirError, whose message says how to fix it.
	ErrInsecureDir = errors.New("uds: insecure socket directory")
	// ErrUnsupportedFS: the socket directory is on a network or non-POSIX
	// filesystem (NFS, CIFS, FAT, NTFS, 9p, ...), where socket files are
	// either impossible or reachable only from one host.
	ErrUnsupportedFS = errors.New("uds: socket directory is on a filesystem unfit for sockets")
	// ErrDenied: a peer failed a credential Policy, or its credentials could
	// not be read (which always denies).
	ErrDenied = errors.New("uds: peer denied by credential policy")
	// ErrStolen: the socket path no longer names this listener's socket.
	ErrStolen = errors.New("uds: socket path no longer names this listener")
	// ErrInvalidPath: an empty path, a NUL byte, or no socket name after the
	// directory ("/", ".", "..").
	ErrInvalidPath = errors.New("uds: invalid socket path")
	// ErrInvalidOption: an Option or DialOption was rejected when the
	// listener or the dial was set up.
	ErrInvalidOption = errors.New("uds: invalid option")
)

// PathTooLongError reports a socket address that cannot fit in sun_path.
// errors.Is(err, syscall.ENAMETOOLONG) holds, as for git.
type PathTooLongError struct {
	Path string // the path (or abstract name) as given
	// Len is the length of the part that did not fit: the whole path, or
	// the basename when Basename is set.
	Len int
	// Max is the most bytes that part may have.
	Max int
	// Basename is set when the path was long enough to need the
	// /proc/self/fd route and its last component was still too long for it.
	Basename bool
}

// Error says which part is too long and by how much. Safe for concurrent use.
func (e *PathTooLongError) Error() string {
	if e.Basename {
		return fmt.Sprintf("uds: socket name too long in %q: basename is %d bytes, at most %d fit behind /proc/self/fd", e.Path, e.Len, e.Max)
	}
	return fmt.Sprintf("uds: socket path too long: %q is %d bytes, at most %d", e.Path, e.Len, e.Max)
}

// Unwrap makes errors.Is(err, syscall.ENAMETOOLONG) true. Safe for
// concurrent use.
func (e *PathTooLongError) Unwrap() error { return syscall.ENAMETOOLONG }

// InUseError says who holds a path. errors.Is(err, ErrInUse) holds.
type InUseError struct {
	Path string // the path, or "@name" for an abstract name
	// Owner holds the credentials of the live server, read with SO_PEERCRED
	// on a probe connection; nil when nobody answered the probe (another
	// starter holds the start-up lock, or the server's backlog was full).
	Owner *Cred
}

// Error names the path and, when known, its owner. Safe for concurrent use.
func (e *InUseError) Error() string {
	if e.Owner == nil {
		return fmt.Sprintf("uds: socket in use by a live server: %s", e.Path)
	}
	return fmt.Sprintf("uds: socket in use by a live server: %s (owner uid %d, gid %d, pid %d)",
		e.Path, e.Owner.UID, e.Owner.GID, e.Owner.PID)
}

// Is makes errors.Is(err, ErrInUse) true. Safe for concurrent use.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// InsecureDirError says why a socket directory was refused.
// errors.Is(err, ErrInsecureDir) holds.
type InsecureDirError struct {
	Dir     string      // the directory
	UID     uint32      // its owner
	WantUID uint32      // our effective uid
	Mode    os.FileMode // its permission bits (and sticky/setgid bits)
	Reason  string      // what is wrong, in words
}

// Error says what is wrong and how to fix it. Safe for concurrent use.
func (e *InsecureDirError) Error() string {
	return fmt.Sprintf("uds: insecure socket directory %s (owner uid %d, mode %04o): %s; "+
		"use a private directory (mkdir -m 0700, owned by uid %d) such as $XDG_RUNTIME_DIR/<app>, "+
		"or pass WithInsecureDir() to accept the risk",
		e.Dir, e.UID, uint32(e.Mode), e.Reason, e.WantUID)
}

// Is makes errors.Is(err, ErrInsecureDir) true. Safe for concurrent use.
func (e *InsecureDirError) Is(target error) bool { return target == ErrInsecureDir }

// DialError is every error Dial returns. State is git's classification of
// the failure: NotListening, PathNotFound or OtherError. errors.Is matches
// ErrNotListening or ErrNotFound (by State) and the cause in Err, such as
// syscall.ECONNREFUSED or context.DeadlineExceeded.
type DialError struct {
	Path     string
	State    ActiveState
	Attempts int   // connect attempts made
	Err      error // the last cause
}

// Error names the path, the state, the attempts and the last cause. Safe
// for concurrent use.
func (e *DialError) Error() string {
	return fmt.Sprintf("uds: dial %s: %s after %d attempt(s): %v", e.Path, e.State, e.Attempts, e.Err)
}

// Unwrap returns the sentinel matching State (if any) and the cause. Safe
// for concurrent use.
func (e *DialError) Unwrap() []error {
	switch e.State {
	case NotListening:
		return []error{ErrNotListening, e.Err}
	case PathNotFound:
		return []error{ErrNotFound, e.Err}
	}
	return []error{e.Err}
}
