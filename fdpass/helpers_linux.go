package fdpass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// EnvFD names the environment variable through which StartChild tells a
// child process the number of its end of the socketpair.
const EnvFD = "PKTIPC_FDPASS_FD"

// Accept back-off on EMFILE/ENFILE (net/http's numbers).
const (
	acceptFirstBackoff = 5 * time.Millisecond
	acceptMaxBackoff   = time.Second
)

// Socketpair returns the two ends of a connected, close-on-exec Unix
// stream socketpair, ready for New.
func Socketpair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("fdpass: socketpair: %w", err)
	}
	a, err := fdConn(fds[0], "fdpass-socketpair")
	if err != nil {
		sysClose(fds[1])
		return nil, nil, err
	}
	b, err := fdConn(fds[1], "fdpass-socketpair")
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// fdConn wraps fd as a *net.UnixConn. net.FileConn dups, so fd itself is
// closed here in every case.
func fdConn(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("fdpass: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%w: %s is not a Unix socket", ErrInvalid, name)
	}
	return uc, nil
}

// Pair returns two passers connected by a fresh socketpair, both built
// with opts.
func Pair(opts ...Option) (*Passer, *Passer, error) {
	a, b, err := Socketpair()
	if err != nil {
		return nil, nil, err
	}
	pa, err := New(a, opts...)
	if err != nil {
		a.Close()
		b.Close()
		return nil, nil, err
	}
	pb, err := New(b, opts...)
	if err != nil {
		pa.Close()
		b.Close()
		return nil, nil, err
	}
	return pa, pb, nil
}

// Listener accepts connections on a filesystem socket path and makes a
// Passer of each. Unlike AnyEvent::FDpasser it never unlinks an existing
// path before binding (bind fails with EADDRINUSE instead), and Close
// removes the path only if it still names the socket this Listener bound
// (same device and inode), so a successor's socket is never deleted. For
// long paths, stale-socket recovery and permission policy use package uds
// and New on the accepted connection.
type Listener struct {
	ul       *net.UnixListener
	path     string
	dev, ino uint64
	opts     []Option

	closeMu sync.Mutex
	closed  bool // under closeMu: Close ran
}

// Listen binds and listens on path; every accepted Passer gets opts.
func Listen(path string, opts ...Option) (*Listener, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("fdpass: %w", err)
	}
	ul.SetUnlinkOnClose(false)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		ul.Close()
		return nil, fmt.Errorf("fdpass: %s: %w", path, err)
	}
	return &Listener{ul: ul, path: path, dev: uint64(st.Dev), ino: st.Ino, opts: opts}, nil
}

// Addr returns the listener's address. Safe for concurrent use.
func (l *Listener) Addr() net.Addr { return l.ul.Addr() }

// Accept waits for the next connection and returns its Passer. It backs
// off (5 ms doubling to 1 s) while the process is out of descriptors
// instead of failing, and returns ctx's error when ctx ends first. Safe
// for concurrent use, but a cancelled Accept also wakes the others, which
// then return an error: run one accept loop per listener.
func (l *Listener) Accept(ctx context.Context) (*Passer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fdpass: accept: %w", err)
	}
	l.ul.SetDeadline(time.Time{}) // clear what an earlier cancelled Accept set
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		l.ul.SetDeadline(time.Unix(1, 0)) // wake a blocked accept
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	backoff := acceptFirstBackoff
	for {
		c, err := l.ul.AcceptUnix()
		if err == nil {
			p, err := New(c, l.opts...)
			if err != nil {
				c.Close()
				return nil, err
			}
			return p, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fdpass: accept: %w", ctx.Err())
		}
		if !errors.Is(err, unix.EMFILE) && !errors.Is(err, unix.ENFILE) {
			return nil, fmt.Errorf("fdpass: accept: %w", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("fdpass: accept: %w", ctx.Err())
		}
		backoff = min(2*backoff, acceptMaxBackoff)
	}
}

// Close removes the socket path if it still names the socket this
// Listener bound, and stops listening. Safe for concurrent use.
func (l *Listener) Close() error {
	// The path is looked at while the socket is still bound, so its inode
	// cannot be freed and given to a successor's socket between the look
	// and the unlink; closeMu keeps a second Close from looking after the
	// first closed the socket.
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed {
		return l.ul.Close() // net's error for a listener closed already
	}
	l.closed = true
	var uerr error
	var st unix.Stat_t
	if unix.Lstat(l.path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK &&
		uint64(st.Dev) == l.dev && st.Ino == l.ino {
		if err := unix.Unlink(l.path); err != nil {
			uerr = fmt.Errorf("fdpass: unlink %s: %w", l.path, err)
		}
	}
	if err := l.ul.Close(); err != nil {
		return err
	}
	return uerr
}

// Dial connects to the socket at path and returns a Passer for it.
func Dial(ctx context.Context, path string, opts ...Option) (*Passer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("fdpass: %w", err)
	}
	p, err := New(c.(*net.UnixConn), opts...)
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// StartChild starts cmd with one end of a fresh socketpair as an extra
// file, names its descriptor number in the child's environment variable
// EnvFD, and returns a Passer on the parent's end. The child calls FromEnv
// (or, for a foreign peer, reads the variable itself). The child's end is
// a blocking socket; the parent's copy of it is closed once the child has
// started. cmd must not have been started. On error the child is not
// running.
func StartChild(cmd *exec.Cmd, opts ...Option) (*Passer, error) {
	if cmd.Process != nil {
		return nil, fmt.Errorf("%w: command already started", ErrInvalid)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fdpass: socketpair: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "fdpass-child")
	defer child.Close()
	conn, err := fdConn(fds[0], "fdpass-parent")
	if err != nil {
		return nil, err
	}
	p, err := New(conn, opts...)
	if err != nil {
		conn.Close()
		return nil, err
	}
	n := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, child)
	cmd.Env = append(cmd.Environ(), EnvFD+"="+strconv.Itoa(n))
	if err := cmd.Start(); err != nil {
		p.Close()
		return nil, fmt.Errorf("fdpass: start %s: %w", cmd.Path, err)
	}
	return p, nil
}

// FromEnv makes a Passer of the socket that StartChild handed to this
// process, and removes EnvFD from the environment so grandchildren do not
// inherit a stale number. The inherited descriptor is replaced by a
// close-on-exec copy. A number that names no descriptor this process
// inherited open across exec (one it opened itself is close-on-exec, as
// Go opens them all), or no Unix stream socket, is refused with ErrNoEnv
// and left alone: a variable passed down by a process in between that
// did not take it can name a descriptor that has since become another.
func FromEnv(opts ...Option) (*Passer, error) {
	s, ok := os.LookupEnv(EnvFD)
	if !ok {
		return nil, ErrNoEnv
	}
	os.Unsetenv(EnvFD) // taken or refused, it is stale for a grandchild
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("%w: %s=%q", ErrNoEnv, EnvFD, s)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: descriptor %d: %w", ErrNoEnv, fd, err)
	}
	if flags&unix.FD_CLOEXEC != 0 {
		return nil, fmt.Errorf("%w: descriptor %d is close-on-exec: not inherited", ErrNoEnv, fd)
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("%w: descriptor %d: %w", ErrNoEnv, fd, err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("%w: descriptor %d: %w", ErrNoEnv, fd, err)
	}
	if domain != unix.AF_UNIX || typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("%w: descriptor %d is not a Unix stream socket", ErrNoEnv, fd)
	}
	conn, err := fdConn(fd, "fdpass-env")
	if err != nil {
		return nil, err
	}
	p, err := New(conn, opts...)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return p, nil
}

// RefuseFDs marks conn as a socket that must not carry descriptors
// (SO_PASSRIGHTS=0, Linux 6.16+): a peer's sendmsg with SCM_RIGHTS then
// fails with EPERM while ordinary writes keep working. Use it on sockets
// whose reads do not use recvmsg (gnet's), where the kernel would
// otherwise silently close passed descriptors. Older kernels give an
// error matching errors.ErrUnsupported.
func RefuseFDs(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("fdpass: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSRIGHTS, 0)
	}); err != nil {
		return fmt.Errorf("fdpass: %w", err)
	}
	if errors.Is(serr, unix.ENOPROTOOPT) || errors.Is(serr, unix.EINVAL) {
		return fmt.Errorf("fdpass: SO_PASSRIGHTS: %w", errors.ErrUnsupported)
	}
	if serr != nil {
		return fmt.Errorf("fdpass: SO_PASSRIGHTS: %w", serr)
	}
	return nil
}
