//go:build unix

package engine

import (
	"os"
	"syscall"
)

// socketPair makes a connected pair of stream sockets, close-on-exec, the
// second end non-blocking (a doorbell's: ringing never waits).
func socketPair() ([2]int, error) {
	// ForkLock keeps the pair from leaking into a child started before
	// CloseOnExec, as the standard library does.
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return fds, os.NewSyscallError("socketpair", err)
	}
	if err := syscall.SetNonblock(fds[1], true); err != nil {
		_ = syscall.Close(fds[0])
		_ = syscall.Close(fds[1])
		return fds, os.NewSyscallError("setnonblock", err)
	}
	return fds, nil
}

// writeAvailable writes b[*off:] to the non-blocking fd while it takes
// bytes, advancing *off. It reports false when the socket is full (the
// caller waits for room and calls again), true when all is written or an
// error ended the write. It is the body of RawConn.Write callbacks.
func writeAvailable(fd uintptr, b []byte, off *int) (done bool, err error) {
	for *off < len(b) {
		n, err := sysWrite(fd, b[*off:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false, nil
		case err != nil:
			return true, err
		}
		*off += n
	}
	return true, nil
}
