//go:build linux

package uds

import (
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Seams: tests swap these to inject failures; a failure to read
// credentials or to refuse descriptors must deny the peer.
var (
	// getsockopt never waits: a raw system call, as accept4 is (see
	// rawAccept4).
	// The credentials come back by value: a pointer would cost an
	// allocation per accepted connection.
	getPeerCred = func(fd int) (unix.Ucred, error) {
		var uc unix.Ucred
		l := uint32(unsafe.Sizeof(uc))
		_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERCRED,
			uintptr(unsafe.Pointer(&uc)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return unix.Ucred{}, e
		}
		return uc, nil
	}
	setPassRights = func(fd int, on bool) error {
		v := 0
		if on {
			v = 1
		}
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS, v)
	}
)

func peerCred(c *net.UnixConn) (Cred, error) {
	if c == nil {
		return Cred{}, fmt.Errorf("uds: SO_PEERCRED: %w", net.ErrClosed)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("uds: SO_PEERCRED: %w", err)
	}
	var cred Cred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = fdCred(int(fd)) }); err != nil {
		return Cred{}, fmt.Errorf("uds: SO_PEERCRED: %w", err)
	}
	return cred, cerr
}

func fdCred(fd int) (Cred, error) {
	uc, err := getPeerCred(fd)
	if err != nil {
		return Cred{}, fmt.Errorf("uds: SO_PEERCRED: %w", err)
	}
	return Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}, nil
}

// refusePassRights turns SO_PASSRIGHTS off; kernels before 6.16 lack the
// option (ENOPROTOOPT) and are left alone.
func refusePassRights(fd int) error {
	if err := setPassRights(fd, false); err != nil && err != unix.ENOPROTOOPT {
		return fmt.Errorf("uds: SO_PASSRIGHTS: %w", err)
	}
	return nil
}

// rightsOffOn reports whether connections accepted on the listening socket
// fd start with SO_PASSRIGHTS off: it is off on fd, and this kernel copies
// it to accepted connections.
func rightsOffOn(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS)
	return err == nil && v == 0 && rightsInherited()
}
