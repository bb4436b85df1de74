package uds

import (
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Listener is a Unix-socket listener that owns its path: it serialises
// start-up with a flock'ed lock file held for its life, watches for theft,
// checks peer credentials before handing out a connection, and unlinks the
// path on Close only if the path still names its socket.
//
// A Listener is shared by the goroutines that accept on it, its theft
// watcher and whoever closes it. Invariant: every field but the atomics,
// the sync values and closeErr is set by Listen before the Listener is
// returned and only read afterwards; stolenErr is stored before stolen is
// closed, and stolen is closed at most once (through stolenOnce); closeErr
// is written only inside closeOnce; the claim on the path (directory,
// lock, socket identity) is released only by Close, after the watcher has
// stopped.
type Listener struct {
	ul        *net.UnixListener
	path      string   // as given to Listen ("@name" when abstract)
	addr      net.Addr // path as a *net.UnixAddr
	policy    Policy
	passRts   bool
	rightsOff bool // connections inherit SO_PASSRIGHTS off from the socket
	log       *slog.Logger
	pathClaim // what it holds on disk for a filesystem path (Linux)

	denied     atomic.Uint64
	denyLogAt  atomic.Int64 // monotonic ns (since born) before which denials are not logged
	denySilent atomic.Uint64
	born       time.Time

	stolen     chan struct{}
	stolenOnce sync.Once
	stolenErr  atomic.Pointer[error]
	notified   atomic.Int64 // checks that an event started (watch_linux.go)
	ticks      atomic.Int64 // checks that the watch's timer started
	evented    bool         // events cover the path: the timer is a slow sweep

	// acc is a duplicate of the listening socket that AcceptFD waits on in
	// Go's netpoller (accept_linux.go), accRC its RawConn: made by the
	// first AcceptFD, closed by Close; accMu guards them, and accClosed
	// says Close has run.
	accMu     sync.Mutex
	acc       *os.File
	accRC     syscall.RawConn
	accClosed bool

	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{} // closed by Close to stop the watcher
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
// was bound through; Addr returns the path. On systems other than Linux it
// returns errors.ErrUnsupported. Safe for concurrent use.
func Listen(path string, opts ...Option) (*Listener, error) { return openListener(path, opts) }

// AcceptUnix waits for the next connection whose peer passes the policy and
// returns it with the peer's credentials. Peers that fail the policy, or
// whose credentials cannot be read, are closed before any byte is read and
// counted (Denied). Accept errors are returned as the net package gives
// them (errors.Is(err, syscall.EMFILE) works; the caller backs off) and
// trigger a theft check; after Close the error matches net.ErrClosed.
// SO_PASSRIGHTS is off on the connection unless WithPassRights(true).
// Safe for concurrent use; Close from any goroutine unblocks it.
func (l *Listener) AcceptUnix() (*net.UnixConn, Cred, error) { return l.accept() }

// AcceptFD is AcceptUnix without the net.UnixConn: it returns the
// connection's descriptor, non-blocking and close-on-exec, which the
// caller owns and must close. A server that answers a connection with
// plain reads and writes saves what a net.UnixConn costs per connection
// (a getsockname, an epoll registration and its removal); net.FileConn
// makes one later if needed. While no connection waits, the calling
// goroutine parks in Go's netpoller on a duplicate of the listening
// socket (made by the first call, closed by Close); it ignores
// SetDeadline. The policy, the errors and the theft check are
// AcceptUnix's. Safe for concurrent use; Close from any goroutine
// unblocks it.
func (l *Listener) AcceptFD() (int, Cred, error) { return l.acceptFD() }

// TryAcceptFD is AcceptFD for an event loop that watches the listening
// socket itself (see SyscallConn): it makes one non-blocking attempt and
// returns fd == -1 with a nil error when no admitted connection waits.
// Peers denied by the policy are closed and counted on the way. The
// descriptor is non-blocking and close-on-exec, and the caller owns it.
// Errors are AcceptFD's (EMFILE and the like as *os.SyscallError; after
// Close, net.ErrClosed). Safe for concurrent use.
func (l *Listener) TryAcceptFD() (int, Cred, error) { return l.tryAcceptFD() }

// SyscallConn gives access to the listening socket's descriptor, for
// registering it with an event loop's epoll set (readiness only: accept
// with TryAcceptFD, so the policy holds). The descriptor stays open until
// Close; deregister it before calling Close. Safe for concurrent use.
func (l *Listener) SyscallConn() (syscall.RawConn, error) { return l.ul.SyscallConn() }

// Waiting reports whether a connection waits in the backlog to be
// accepted, without waiting itself. Safe for concurrent use.
func (l *Listener) Waiting() bool { return l.waiting() }

// Accept is AcceptUnix for the net.Listener interface; the connection is a
// *net.UnixConn. Safe for concurrent use.
func (l *Listener) Accept() (net.Conn, error) {
	c, _, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// SetDeadline sets the time after which a waiting AcceptUnix returns an
// error matching os.ErrDeadlineExceeded; the zero time means no deadline.
// The engine uses it to take one waiting client without blocking when the
// descriptor table is full. Safe for concurrent use.
func (l *Listener) SetDeadline(t time.Time) error { return l.setDeadline(t) }

// Addr returns the path as given to Listen ("@name" when abstract), not the
// /proc route the socket was bound through. Safe for concurrent use.
func (l *Listener) Addr() net.Addr { return l.addr }

// Path returns the path as given to Listen. Safe for concurrent use.
func (l *Listener) Path() string { return l.path }

// Stolen returns a channel closed once the path is found no longer naming
// this listener's socket (another socket in its place, the path deleted,
// its directory renamed); the listener then serves nobody new, and its
// owner should stop. It is never closed for an abstract name, nor by
// Close. Safe for concurrent use.
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
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}
