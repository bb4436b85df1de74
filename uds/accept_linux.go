//go:build linux

package uds

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Seams: tests swap these to inject accept errors and to observe denied
// connections before they are closed.
var (
	acceptUnix  = (*net.UnixListener).AcceptUnix
	closeDenied = func(c *net.UnixConn) error { return c.Close() }
)

// accept is AcceptUnix: it returns the first admitted connection, closing
// and counting the denied ones before it.
func (l *Listener) accept() (*net.UnixConn, Cred, error) {
	for {
		c, err := acceptUnix(l.ul)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.checkStolen()
			}
			return nil, Cred{}, err
		}
		cred, err := l.admit(c)
		if err != nil {
			l.deny(cred, err)
			closeDenied(c)
			continue
		}
		return c, cred, nil
	}
}

// acceptFD is AcceptFD. The accept goroutine takes connections with
// accept4 and, when there is none, parks in Go's netpoller until the
// socket is readable, as net's own Accept does; its thread is free for
// other goroutines meanwhile. It waits on a duplicate of the socket (acc):
// the listener's RawConn refuses Read, and the duplicate's registration in
// the netpoller is the duplicate's own, so the listener's Accept and
// deadlines are untouched. Close closes the duplicate, which ends the
// wait.
func (l *Listener) acceptFD() (int, Cred, error) {
	rc, err := l.accConn()
	if err != nil {
		return -1, Cred{}, err
	}
	a := acceptCalls.Get().(*acceptCall)
	a.l = l
	defer func() {
		a.l, a.err = nil, nil
		acceptCalls.Put(a)
	}()
	for {
		a.nfd, a.err = -1, nil
		cerr := rc.Read(a.read)
		if fd, cred, done, err := l.admitAccepted(a.nfd, a.err, cerr); done {
			return fd, cred, err
		}
	}
}

// acceptCall is the state of one acceptFD call that its RawConn.Read
// callback fills in. A closure would be made, with the variables it sets,
// on every call; acceptCalls keeps states with their callback bound, so
// that an accept allocates nothing (a git-style client makes a connection
// per request).
type acceptCall struct {
	l    *Listener
	nfd  int
	err  error
	read func(fd uintptr) bool // a.accept
}

var acceptCalls = sync.Pool{New: func() any {
	a := new(acceptCall)
	a.read = a.accept
	return a
}}

// accept takes a connection with accept4; false (no connection yet, the
// listener open) waits for readability.
func (a *acceptCall) accept(fd uintptr) bool {
	for {
		a.nfd, a.err = rawAccept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch a.err {
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EAGAIN:
			return a.l.closing.Load()
		}
		return true
	}
}

// accConn returns the RawConn of the duplicate of the listening socket
// that acceptFD waits on, making both on first use.
func (l *Listener) accConn() (syscall.RawConn, error) {
	l.accMu.Lock()
	defer l.accMu.Unlock()
	if l.accClosed {
		return nil, net.ErrClosed
	}
	if l.acc != nil {
		return l.accRC, nil
	}
	rc, err := l.ul.SyscallConn()
	if err != nil {
		return nil, net.ErrClosed
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, net.ErrClosed
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	// A non-blocking descriptor: os.NewFile registers it with the
	// netpoller.
	acc := os.NewFile(uintptr(dup), l.path)
	arc, err := acc.SyscallConn()
	if err != nil {
		_ = acc.Close()
		return nil, net.ErrClosed
	}
	l.acc, l.accRC = acc, arc
	return arc, nil
}

// closeAcc closes acceptFD's duplicate, which wakes a waiting acceptFD
// with an error; none is made afterwards.
func (l *Listener) closeAcc() {
	l.accMu.Lock()
	defer l.accMu.Unlock()
	l.accClosed = true
	if l.acc != nil {
		_ = l.acc.Close()
		l.acc, l.accRC = nil, nil
	}
}

// tryAcceptFD is TryAcceptFD: accept4 until an admitted connection or
// EAGAIN.
func (l *Listener) tryAcceptFD() (int, Cred, error) {
	rc, err := l.ul.SyscallConn()
	if err != nil {
		return -1, Cred{}, err
	}
	for {
		nfd, aerr := -1, error(nil)
		cerr := rc.Control(func(fd uintptr) {
			for {
				nfd, aerr = rawAccept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				if aerr != unix.EINTR && aerr != unix.ECONNABORTED {
					return
				}
			}
		})
		if aerr == unix.EAGAIN && cerr == nil && !l.closing.Load() {
			return -1, Cred{}, nil
		}
		if fd, cred, done, err := l.admitAccepted(nfd, aerr, cerr); done {
			return fd, cred, err
		}
	}
}

// admitAccepted finishes one accept4 of acceptFD or tryAcceptFD: the
// listener closed meanwhile (cerr, or closing), an accept error, or a
// connection to admit. done == false means the peer was denied and closed,
// and the caller accepts again.
func (l *Listener) admitAccepted(nfd int, aerr, cerr error) (fd int, cred Cred, done bool, err error) {
	if cerr != nil || l.closing.Load() {
		if nfd >= 0 {
			unix.Close(nfd)
		}
		return -1, Cred{}, true, net.ErrClosed
	}
	if aerr != nil {
		l.checkStolen()
		return -1, Cred{}, true, os.NewSyscallError("accept4", aerr)
	}
	cred, err = l.admitFD(nfd)
	if err != nil {
		l.deny(cred, err)
		unix.Close(nfd)
		return -1, Cred{}, false, nil
	}
	return nfd, cred, true, nil
}

// waiting is Waiting: a poll of the listening socket that does not wait.
func (l *Listener) waiting() bool {
	rc, err := l.ul.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	_ = rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		ready = err == nil && n > 0
	})
	return ready
}

// rawAccept4 is accept4(2) without the peer's address, which a Unix
// socket's client seldom has and unix.Accept4 would decode and allocate.
// The listening socket is non-blocking, so accept4 never waits, and it is
// a raw system call: an ordinary one, the first after the process went
// idle, wakes the runtime's monitor thread, which then polls every 20
// microseconds until the process is idle again; for a server woken once
// per connection that costs more context switches than the connection.
func rawAccept4(fd, flags int) (int, error) {
	nfd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, uintptr(flags), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(nfd), nil
}

// admit is admitFD on a connection's descriptor.
func (l *Listener) admit(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var cred Cred
	var aerr error
	if err := rc.Control(func(fd uintptr) { cred, aerr = l.admitFD(int(fd)) }); err != nil {
		return Cred{}, err
	}
	return cred, aerr
}

// admitFD reads the peer's credentials, makes sure SO_PASSRIGHTS is off
// and applies the policy. Any failure denies: a peer we cannot identify,
// or that could still push descriptors, is not let in. SO_PASSRIGHTS is
// switched off here unless the connection inherited it off from the
// listener (rightsOff).
func (l *Listener) admitFD(fd int) (Cred, error) {
	cred, err := fdCred(fd)
	if err != nil {
		return Cred{}, err
	}
	if !l.passRts && !l.rightsOff {
		if err := refusePassRights(fd); err != nil {
			return cred, err
		}
	}
	return cred, l.policy.Allow(cred)
}

// rightsInherited reports whether an accepted connection inherits its
// listener's SO_PASSRIGHTS (Linux 6.16 and later copy it at connect). It
// asks the kernel once per process, with a throwaway listener on an
// autobound abstract address; any failure answers false, and then every
// connection has the option switched off on its own.
var rightsInherited = sync.OnceValue(func() bool {
	ok := false
	l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(l)
	if unix.SetsockoptInt(l, unix.SOL_SOCKET, unix.SO_PASSRIGHTS, 0) != nil ||
		unix.Bind(l, &unix.SockaddrUnix{}) != nil || unix.Listen(l, 1) != nil {
		return false
	}
	sa, err := unix.Getsockname(l)
	if err != nil {
		return false
	}
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(c)
	if unix.Connect(c, sa) != nil {
		return false
	}
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(a)
	v, err := unix.GetsockoptInt(a, unix.SOL_SOCKET, unix.SO_PASSRIGHTS)
	ok = err == nil && v == 0
	return ok
})

// denyLogInterval limits denial log lines: a flood of foreign peers must not
// become a flood of log lines.
const denyLogInterval = time.Second

// deny counts a refused connection, which the caller closes next, logging
// at most one line per denyLogInterval with the number left unlogged since
// the last.
func (l *Listener) deny(cred Cred, why error) {
	l.denied.Add(1) // counted before the peer can see the close
	now := int64(time.Since(l.born))
	next := l.denyLogAt.Load()
	if now < next || !l.denyLogAt.CompareAndSwap(next, now+int64(denyLogInterval)) {
		l.denySilent.Add(1)
		return
	}
	l.log.Warn("uds: peer denied", slog.String("path", l.path),
		slog.Uint64("uid", uint64(cred.UID)), slog.Uint64("gid", uint64(cred.GID)), slog.Int64("pid", int64(cred.PID)),
		slog.Any("err", why), slog.Uint64("unlogged_before", l.denySilent.Swap(0)))
}

func (l *Listener) setDeadline(t time.Time) error { return l.ul.SetDeadline(t) }
