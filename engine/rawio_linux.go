package engine

import (
	"syscall"
	"unsafe"
)

// The engine's reads, writes, peeks and closes of sockets are raw system
// calls: every descriptor they touch is non-blocking (or, for close, a
// socket, whose close never waits), so none can hold its thread, and a
// raw call skips what the runtime does around an ordinary one. That is
// more than bookkeeping: the first ordinary system call after the process
// went idle wakes the runtime's monitor thread, which then polls every
// 20 microseconds until the process is idle again, and on a server that
// idles between requests that costs more context switches than the
// requests themselves. Calls that wait (poll, epoll_wait) stay ordinary,
// so that the runtime can hand their processor to other goroutines.
func sysRead(fd uintptr, p []byte) (int, error)  { return rawIO(syscall.SYS_READ, fd, p) }
func sysWrite(fd uintptr, p []byte) (int, error) { return rawIO(syscall.SYS_WRITE, fd, p) }
func sysClose(fd int) error                      { return rawErr(syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)) }
func sysShutdown(fd int) error                   { return syscall.Shutdown(fd, syscall.SHUT_RDWR) }

// rawIO is read(2) or write(2) (trap) of p on fd as a raw system call.
// The address is converted in the call itself, so that p stays alive and
// in place through it.
func rawIO(trap, fd uintptr, p []byte) (int, error) {
	ptr := unsafe.Pointer(&zeroByte)
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(trap, fd, uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// zeroByte is the address given for an empty buffer.
var zeroByte byte

func rawErr(_, _ uintptr, e syscall.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}
