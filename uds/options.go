package uds

import (
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"time"
)

// Defaults and limits. Each is an option's default or bound, with its reason.
const (
	// DefaultMode is the socket's mode: owner only. Connecting needs write
	// permission on the socket, so this admits only our uid (and root).
	DefaultMode os.FileMode = 0o600
	// DefaultDirMode is the mode of a socket directory Listen creates, when
	// the socket mode grants nothing to group or others.
	DefaultDirMode os.FileMode = 0o700
	// DefaultBacklog is listen(2)'s backlog. git uses 50 because each of
	// its accept threads hands work to a queue; our accept loop is cheaper
	// but callers probe before they send (two connections per git request),
	// so a burst of 64 concurrent git clients already needs 128 slots. 512
	// absorbs such bursts with room to spare at about 1 KiB of kernel memory
	// per queued connection; the kernel silently caps it at
	// net.core.somaxconn (4096 by default).
	DefaultBacklog = 512
	// DefaultWatchInterval is how often the theft watcher lstats the path
	// where events do not cover it: no inotify instance left, a directory
	// that cannot be watched, or a filesystem whose changes may not pass
	// through this kernel (network, FUSE). Elsewhere inotify and the mount
	// table's poll start every check, and the timer is a sweep each minute;
	// without inotify the timer runs at least four times a second.
	DefaultWatchInterval = time.Second
	// MaxWatchInterval bounds the watch interval: a stolen socket must be
	// noticed within one second.
	MaxWatchInterval = time.Second
	// MinWatchInterval keeps the watcher from turning into a busy loop of
	// lstat calls.
	MinWatchInterval = 10 * time.Millisecond
	// MaxPathLen is the longest filesystem socket path the kernel accepts in
	// sun_path (108 bytes including the terminating NUL). Longer paths use
	// the /proc/self/fd route; abstract names may use all 107 bytes after
	// their leading NUL.
	MaxPathLen = 107
	// LockSuffix names the start-up lock file beside the socket. It must not
	// be ".lock": git creates "<path>.lock" with O_EXCL during its own
	// start-up and treats an existing one as "another server is starting",
	// so a lock file of ours held (or left) there would block every git
	// server on the same path forever.
	LockSuffix = ".pktipc-lock"
	// maxBacklog is the largest backlog accepted. The kernel stores it in a
	// 32-bit field but caps it at somaxconn; anything above 65535 is a typo.
	maxBacklog = 65535
)

// Option configures Listen. Options are validated when Listen is called.
type Option func(*options) error

type options struct {
	mode        os.FileMode
	dirMode     os.FileMode
	dirModeSet  bool
	gid         int // -1: leave the group as the kernel sets it
	insecureDir bool
	policy      Policy
	abstract    bool
	backlog     int
	watch       time.Duration
	passRights  bool
	logger      *slog.Logger
}

func newOptions(opts []Option) (*options, error) {
	o := &options{
		mode:    DefaultMode,
		dirMode: DefaultDirMode,
		gid:     -1,
		backlog: DefaultBacklog,
		watch:   DefaultWatchInterval,
	}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.abstract && o.policy == nil {
		return nil, fmt.Errorf("%w: WithAbstract requires an explicit WithPolicy: "+
			"abstract sockets have no file permissions, so any local user can connect", ErrInvalidOption)
	}
	if o.policy == nil {
		o.policy = SameUser()
	}
	if !o.dirModeSet {
		o.dirMode = derivedDirMode(o.mode)
	}
	if o.mode&0o077 == 0 && o.dirMode&0o077 != 0 {
		return nil, fmt.Errorf("%w: directory mode %04o opens a private socket (mode %04o) to others; "+
			"a private socket needs a directory only its owner can enter", ErrInvalidOption, uint32(o.dirMode), uint32(o.mode))
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// derivedDirMode opens a created directory just enough for the classes the
// socket mode admits: those who may connect need search permission on it.
func derivedDirMode(mode os.FileMode) os.FileMode {
	d := DefaultDirMode
	if mode&0o070 != 0 {
		d |= 0o050
	}
	if mode&0o007 != 0 {
		d |= 0o005
	}
	return d
}

// WithMode sets the socket's permission bits (default 0600). The mode is in
// place when the socket appears: it is bound under a narrowed umask, and
// bits the process umask removes are added back through a no-follow handle
// on the socket, never by chmod on a path. It must give the owner read and
// write, and nothing beyond the permission bits.
func WithMode(mode os.FileMode) Option {
	return func(o *options) error {
		if mode&^os.ModePerm != 0 || mode&0o600 != 0o600 {
			return fmt.Errorf("%w: socket mode %v: want permission bits only, including owner read and write (0600)", ErrInvalidOption, mode)
		}
		o.mode = mode
		return nil
	}
}

// WithDirMode sets the mode of the socket directory when Listen has to
// create it (default 0700, or opened for group/others when WithMode grants
// them access). Only the last directory is created; an existing directory
// is never chmodded. Group and others may not get write permission.
func WithDirMode(mode os.FileMode) Option {
	return func(o *options) error {
		if mode&^os.ModePerm != 0 || mode&0o700 != 0o700 || mode&0o022 != 0 {
			return fmt.Errorf("%w: directory mode %v: want permission bits only, owner rwx, no write for group or others", ErrInvalidOption, mode)
		}
		o.dirMode, o.dirModeSet = mode, true
		return nil
	}
}

// WithGroup sets the group of the socket and of a directory Listen creates,
// by name or by numeric id. The group is set through a handle while the
// socket still grants nothing to group or others, then the group bits are
// added. Non-root processes must be members of the group (Listen fails
// otherwise). An existing directory's group is left alone.
func WithGroup(group string) Option {
	return func(o *options) error {
		gid, err := strconv.ParseInt(group, 10, 64)
		if err != nil {
			g, lerr := user.LookupGroup(group)
			if lerr != nil {
				return fmt.Errorf("%w: group %q: %w", ErrInvalidOption, group, lerr)
			}
			if gid, err = strconv.ParseInt(g.Gid, 10, 64); err != nil {
				return fmt.Errorf("%w: group %q has a non-numeric id %q", ErrInvalidOption, group, g.Gid)
			}
		}
		// A gid is 32 bits, all ones meaning "unchanged"; where int is 32
		// bits, ids above its range cannot be passed on.
		if gid < 0 || gid > 1<<32-2 || int64(int(gid)) != gid {
			return fmt.Errorf("%w: group id %d out of range", ErrInvalidOption, gid)
		}
		o.gid = int(gid)
		return nil
	}
}

// WithInsecureDir skips the socket directory checks: owner must be us, no
// write for group or others, nothing at all for them when the socket is
// private, and no symlink as the directory itself. Use it only for a
// directory whose safety is established some other way.
func WithInsecureDir() Option {
	return func(o *options) error {
		o.insecureDir = true
		return nil
	}
}

// WithPolicy sets the credential policy applied to every accepted peer
// (default SameUser()).
func WithPolicy(p Policy) Option {
	return func(o *options) error {
		if p == nil {
			return fmt.Errorf("%w: nil Policy", ErrInvalidOption)
		}
		o.policy = p
		return nil
	}
}

// WithAbstract makes the path an abstract socket name (Linux only; a
// leading '@' is optional). Abstract names have no permissions, no file and
// no owner, so WithPolicy is then mandatory; they exist per network
// namespace. There is no lock file and nothing to unlink or watch.
func WithAbstract() Option {
	return func(o *options) error {
		o.abstract = true
		return nil
	}
}

// WithBacklog sets listen(2)'s backlog (default DefaultBacklog).
func WithBacklog(n int) Option {
	return func(o *options) error {
		if n < 1 || n > maxBacklog {
			return fmt.Errorf("%w: backlog %d out of range 1..%d", ErrInvalidOption, n, maxBacklog)
		}
		o.backlog = n
		return nil
	}
}

// WithWatchInterval sets how often the listener checks that its path still
// names its socket where events do not cover the path (default 1 s,
// between MinWatchInterval and MaxWatchInterval; see DefaultWatchInterval).
func WithWatchInterval(d time.Duration) Option {
	return func(o *options) error {
		if d < MinWatchInterval || d > MaxWatchInterval {
			return fmt.Errorf("%w: watch interval %v out of range %v..%v", ErrInvalidOption, d, MinWatchInterval, MaxWatchInterval)
		}
		o.watch = d
		return nil
	}
}

// WithPassRights controls SO_PASSRIGHTS (Linux 6.16+). By default (false)
// the listener and every accepted connection refuse SCM_RIGHTS, so a peer
// cannot push descriptors into a socket whose reader would drop them: its
// sendmsg fails with EPERM, where a reader using read(2) would have the
// kernel close them silently. Pass true for sockets that carry
// descriptors. Older kernels, which lack the option, are left as they are.
func WithPassRights(pass bool) Option {
	return func(o *options) error {
		o.passRights = pass
		return nil
	}
}

// WithLogger sets the logger for rare events: a replaced stale socket, a
// stolen socket, denied peers (at most one line per second). By default
// nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.logger = l
		return nil
	}
}

// Dialing follows git's ipc_client_try_connect.
const (
	// connectAttempts and connectStep are git's CONNECTION_WAIT_MS (1000)
	// divided into WAIT_STEP_MS (50) steps: up to 20 attempts, 50 ms apart.
	connectAttempts = 20
	connectStep     = 50 * time.Millisecond
)

// DialOption configures Dial.
type DialOption func(*dialOptions) error

type dialOptions struct {
	waitBusy     bool
	waitNotFound bool
	abstract     bool
	policy       Policy
}

func newDialOptions(opts []DialOption) (*dialOptions, error) {
	o := &dialOptions{}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil DialOption", ErrInvalidOption)
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.abstract && o.policy == nil {
		// Anyone can bind an abstract name first; check who answered.
		o.policy = SameUser()
	}
	return o, nil
}

// WaitIfBusy retries, every 50 ms for about a second, when the server
// refuses (ECONNREFUSED), times out, or has a full backlog (EAGAIN): git's
// wait_if_busy.
func WaitIfBusy() DialOption {
	return func(o *dialOptions) error {
		o.waitBusy = true
		return nil
	}
}

// WaitIfNotFound retries, every 50 ms for about a second, while the path
// does not exist: git's wait_if_not_found, for a server still starting.
func WaitIfNotFound() DialOption {
	return func(o *dialOptions) error {
		o.waitNotFound = true
		return nil
	}
}

// DialAbstract dials an abstract name (a leading '@' is optional). Unless
// ServerPolicy says otherwise, the server must pass SameUser(): anyone may
// bind an abstract name first.
func DialAbstract() DialOption {
	return func(o *dialOptions) error {
		o.abstract = true
		return nil
	}
}

// ServerPolicy checks the server's credentials (SO_PEERCRED, recorded at its
// listen(2)) after connecting; a denied server's connection is closed before
// anything is sent, and Dial fails with ErrDenied.
func ServerPolicy(p Policy) DialOption {
	return func(o *dialOptions) error {
		if p == nil {
			return fmt.Errorf("%w: nil Policy", ErrInvalidOption)
		}
		o.policy = p
		return nil
	}
}
