//go:build linux

package uds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Seams: tests swap these to inject connect results.
var (
	sysConnect = unix.Connect
	// dialUnix connects a *net.UnixConn directly (no descriptor copy, unlike
	// net.FileConn). For AF_UNIX the non-blocking connect completes or fails
	// at once (EAGAIN when the backlog is full), so ctx only matters before it.
	dialUnix = func(ctx context.Context, name string) (*net.UnixConn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", name)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
)

// state is State: git's lstat, then one non-blocking connect.
func state(path string) ActiveState {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if err == unix.ENOENT || err == unix.ENOTDIR {
			return NotListening
		}
		return InvalidPath
	}
	if !isSock(&st) {
		return InvalidPath
	}
	fd, err := connectPath(path)
	switch {
	case err == nil:
		unix.Close(fd)
		return Listening
	case errors.Is(err, unix.EAGAIN):
		return Listening
	case errors.Is(err, unix.ENOENT):
		return PathNotFound
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ETIMEDOUT):
		return NotListening
	}
	return OtherError
}

// dial is Dial, with the retry loop of git's client.
func dial(ctx context.Context, path string, opts []DialOption) (*net.UnixConn, error) {
	return dialWith(ctx, path, opts, dialOnce, PeerCred, func(c *net.UnixConn) { c.Close() })
}

// dialFD is DialFD: Dial without the net.UnixConn.
func dialFD(ctx context.Context, path string, opts []DialOption) (int, error) {
	return dialWith(ctx, path, opts, dialOnceFD, fdCred, func(fd int) { unix.Close(fd) })
}

// dialWith is git's client's retry loop around once, one connection
// attempt, then the server policy's check (cred reads the server's
// credentials, drop closes a refused connection).
func dialWith[C any](ctx context.Context, path string, opts []DialOption,
	once func(context.Context, string, bool) (C, error), cred func(C) (Cred, error), drop func(C)) (C, error) {
	var zero C
	o, err := newDialOptions(opts)
	if err != nil {
		return zero, err
	}
	if ctx == nil {
		return zero, fmt.Errorf("%w: nil context", ErrInvalidOption)
	}
	name := path
	if o.abstract {
		name = "@" + strings.TrimPrefix(path, "@")
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	class, last := OtherError, error(nil)
	for attempt := 1; ; attempt++ {
		if err := ctxEnded(ctx); err != nil {
			if last != nil {
				err = fmt.Errorf("%w (last attempt: %w)", err, last)
			}
			return zero, &DialError{Path: name, State: class, Attempts: attempt - 1, Err: err}
		}
		c, err := once(ctx, name, o.abstract)
		if err == nil {
			return finishDial(name, c, attempt, o, cred, drop)
		}
		if err := ctxEnded(ctx); err != nil {
			// ctx ended inside the attempt, which then fails with a
			// timeout of its own: report the context's end with the
			// last real cause, as above.
			if last != nil {
				err = fmt.Errorf("%w (last attempt: %w)", err, last)
			}
			return zero, &DialError{Path: name, State: class, Attempts: attempt, Err: err}
		}
		var retry bool
		class, retry = classifyConnect(err, o)
		last = err
		if !retry {
			return zero, &DialError{Path: name, State: class, Attempts: attempt, Err: err}
		}
		if attempt >= connectAttempts {
			return zero, &DialError{Path: name, State: NotListening, Attempts: attempt, Err: err}
		}
		if timer == nil {
			timer = time.NewTimer(connectStep)
		} else {
			timer.Reset(connectStep)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
	}
}

// ctxEnded is ctx.Err(), or DeadlineExceeded once ctx's deadline has
// passed even if its timer has not fired yet: an attempt that timed out
// at the deadline is the context's end, not an error of the server.
func ctxEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// dialOnce makes one connection attempt to a path or "@name".
func dialOnce(ctx context.Context, name string, abstract bool) (*net.UnixConn, error) {
	if abstract {
		if err := checkAbstract(name); err != nil {
			return nil, err
		}
		return dialUnix(ctx, name)
	}
	target, h, err := connectName(name)
	if err != nil {
		return nil, err
	}
	if h >= 0 {
		defer unix.Close(h)
	}
	return dialUnix(ctx, target)
}

// dialOnceFD is dialOnce for a bare descriptor: AF_UNIX connects complete
// or fail at once, so ctx only matters between attempts.
func dialOnceFD(_ context.Context, name string, abstract bool) (int, error) {
	if abstract {
		return connectAbstract(name)
	}
	return connectPath(name)
}

func classifyConnect(err error, o *dialOptions) (ActiveState, bool) {
	switch {
	case errors.Is(err, unix.ENOENT):
		return PathNotFound, o.waitNotFound
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ETIMEDOUT), errors.Is(err, unix.EAGAIN):
		return NotListening, o.waitBusy
	}
	return OtherError, false
}

func finishDial[C any](path string, c C, attempt int, o *dialOptions, cred func(C) (Cred, error), drop func(C)) (C, error) {
	if o.policy != nil {
		cr, err := cred(c)
		if err == nil {
			err = o.policy.Allow(cr)
		} else {
			err = fmt.Errorf("%w: %w", ErrDenied, err)
		}
		if err != nil {
			drop(c)
			var zero C
			return zero, &DialError{Path: path, State: OtherError, Attempts: attempt, Err: err}
		}
	}
	return c, nil
}

// connectName returns the sockaddr name that reaches the filesystem socket
// at path. A path longer than sun_path is opened O_PATH (no I/O, no
// blocking even on a FIFO) and reached through /proc/self/fd/<h>; the
// caller closes h (-1 when none) after connecting. A relative path starting
// with '@' is prefixed with "./" so it is not taken for an abstract name.
func connectName(path string) (name string, h int, err error) {
	if path == "" || strings.IndexByte(path, 0) >= 0 {
		return "", -1, fmt.Errorf("%w: %q", ErrInvalidPath, path)
	}
	if path[0] == '@' {
		path = "./" + path
	}
	if len(path) <= MaxPathLen {
		return path, -1, nil
	}
	if !procAvailable() {
		return "", -1, &PathTooLongError{Path: path, Len: len(path), Max: MaxPathLen}
	}
	h, err = unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, os.NewSyscallError("open", err)
	}
	return procFD(h), h, nil
}

// connectPath makes one non-blocking connect to the filesystem socket at
// path and returns the connected descriptor: for AF_UNIX the connect
// completes or fails at once (EAGAIN when the backlog is full), so no
// goroutine or poller is needed.
func connectPath(path string) (int, error) {
	name, h, err := connectName(path)
	if err != nil {
		return -1, err
	}
	if h >= 0 {
		defer unix.Close(h)
	}
	return connectAddr(name)
}

// checkAbstract validates "@name" (at most 107 bytes after the '@').
func checkAbstract(name string) error {
	if len(name) < 2 || name[0] != '@' || strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("%w: abstract name %q", ErrInvalidPath, name)
	}
	if len(name)-1 > MaxPathLen {
		return &PathTooLongError{Path: name, Len: len(name) - 1, Max: MaxPathLen}
	}
	return nil
}

// connectAbstract connects to "@name". It uses the syscall package, which
// (unlike x/sys/unix) accepts the full 107 bytes of an abstract name.
func connectAbstract(name string) (int, error) {
	if err := checkAbstract(name); err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

// connectAddr makes one connect to a sockaddr name as x/sys spells it
// ('@' prefix: abstract). The socket is close-on-exec and non-blocking.
func connectAddr(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := sysConnect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}
