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

// errNotStreamSocket: an inherited descriptor that is not a Unix stream
// socket.
var errNotStreamSocket = errors.New("not a Unix stream socket")

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
	var errs []error
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		if err := a.take(fd, o); err != nil {
			errs = append(errs, &InheritError{FD: fd, Err: err})
		}
	}
	return a, errors.Join(errs...)
}

// take adds descriptor fd to a, or closes it and says why.
func (a *Activation) take(fd int, o *options) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err // not open: nothing to close
	}
	unix.CloseOnExec(fd)
	if err := checkStreamSocket(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		unix.Close(fd)
		return err
	}
	if listening == 0 {
		f := os.NewFile(uintptr(fd), "inherited")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return err
		}
		a.Conns = append(a.Conns, c.(*net.UnixConn))
		return nil
	}
	rightsOff := false
	if !o.passRights {
		if err := refusePassRights(fd); err != nil {
			unix.Close(fd)
			return err
		}
		rightsOff = rightsOffOn(fd)
	}
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

// checkStreamSocket reports whether fd (whose fstat is st) is a Unix
// stream socket.
func checkStreamSocket(fd int, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errNotStreamSocket
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return err
	}
	if domain != unix.AF_UNIX || typ != unix.SOCK_STREAM {
		return errNotStreamSocket
	}
	return nil
}
