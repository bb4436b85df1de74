//go:build linux

package uds

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first descriptor a service manager passes.
const listenFDsStart = 3

// maxInherited bounds LISTEN_FDS: a larger count is not a manager's.
const maxInherited = 1 << 16

// Errors for the descriptors Inherited does not take.
var (
	errNotSocket       = errors.New("not a socket: left open")
	errNotStreamSocket = errors.New("not a Unix stream socket: closed")
)

// What a passed descriptor is.
const (
	fdNone     = iota // not open: the count said more than was passed
	fdOther           // not a socket
	fdForeign         // a socket other than a Unix stream socket
	fdListener        // a listening Unix stream socket
	fdConn            // a connected Unix stream socket
)

func inherited(opts []Option) (*Activation, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	pid, nfds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	a := &Activation{}
	if pid == "" || nfds == "" {
		return a, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return a, nil // meant for another process: none of them is ours
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 || n > maxInherited {
		return a, fmt.Errorf("uds: LISTEN_FDS=%q: not a count of descriptors", nfds)
	}
	// Every descriptor is looked at, and made close-on-exec, before any is
	// taken over: taking one over copies it to the lowest free number,
	// which must not be one this loop has yet to look at. A number not
	// open (a count larger than what was passed) may be taken by such a
	// copy, or by the runtime: it is left alone, and so is anything that
	// is not a socket, which the runtime may have opened there too.
	kinds := make([]int, n)
	errs := make([]error, n)
	for i := range kinds {
		kinds[i], errs[i] = classify(listenFDsStart + i)
	}
	for i, k := range kinds {
		fd := listenFDsStart + i
		switch k {
		case fdForeign:
			unix.Close(fd)
		case fdListener:
			errs[i] = a.takeListener(fd, o)
		case fdConn:
			errs[i] = a.takeConn(fd, o)
		}
	}
	var all []error
	for i, err := range errs {
		if err != nil {
			all = append(all, &InheritError{FD: listenFDsStart + i, Err: err})
		}
	}
	return a, errors.Join(all...)
}

// classify says what descriptor fd is, and makes it close-on-exec if it is
// open.
func classify(fd int) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fdNone, err
	}
	unix.CloseOnExec(fd)
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fdOther, errNotSocket
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fdForeign, err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fdForeign, err
	}
	if domain != unix.AF_UNIX || typ != unix.SOCK_STREAM {
		return fdForeign, errNotStreamSocket
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return fdForeign, err
	}
	if listening != 0 {
		return fdListener, nil
	}
	return fdConn, nil
}

// takeListener adds the listening socket fd to a, or closes it.
func (a *Activation) takeListener(fd int, o *options) error {
	// The manager keeps the socket across the server's restarts: set
	// SO_PASSRIGHTS as asked either way, not only off.
	if err := setPassRights(fd, o.passRights); err != nil && err != unix.ENOPROTOOPT {
		unix.Close(fd)
		return fmt.Errorf("SO_PASSRIGHTS: %w", err)
	}
	rightsOff := !o.passRights && rightsOffOn(fd)
	path := ""
	if sa, err := unix.Getsockname(fd); err == nil {
		if u, ok := sa.(*unix.SockaddrUnix); ok {
			path = u.Name
		}
	}
	ul, err := fileListener(fd) // owns fd, closed on error
	if err != nil {
		return err
	}
	l := newListener(ul, path, o)
	l.rightsOff = rightsOff
	a.Listeners = append(a.Listeners, l)
	return nil
}

// takeConn adds the connected socket fd to a, with the checks a
// connection accepted on a Listener gets (the policy on the peer's
// credentials, SO_PASSRIGHTS), or closes it.
func (a *Activation) takeConn(fd int, o *options) error {
	cred, err := fdCred(fd)
	if err == nil && !o.passRights {
		err = refusePassRights(fd)
	}
	if err == nil {
		err = o.policy.Allow(cred)
	}
	if err != nil {
		unix.Close(fd)
		return err
	}
	f := os.NewFile(uintptr(fd), "inherited")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return err
	}
	a.Conns = append(a.Conns, c.(*net.UnixConn))
	return nil
}
