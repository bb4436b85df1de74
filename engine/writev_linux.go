package engine

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writevSupported: payloads go out with writev(2), uncopied.
const writevSupported = true

// iovec is the kernel's.
type iovec = unix.Iovec

// iovMax is the kernel's limit on iovecs per writev.
const iovMax = 1024

// writeSome writes what fd takes of the parts not yet written, with
// writev(2) calls of at most iovMax pieces, without blocking. It reports
// false when the socket is full (the caller waits for room and calls
// again), true when all is written or an error ended the write. iov is
// the caller's scratch, kept for reuse.
func (g *gather) writeSome(fd uintptr, iov *[]iovec) (done bool, err error) {
	for !g.done() {
		v := (*iov)[:0]
		for i := g.next; i < len(g.parts) && len(v) < iovMax; i++ {
			p := g.parts[i]
			if i == g.next {
				p = p[g.off:]
			}
			if len(p) == 0 {
				continue
			}
			e := unix.Iovec{Base: &p[0]}
			e.SetLen(len(p))
			v = append(v, e)
		}
		*iov = v
		if len(v) == 0 {
			g.next = len(g.parts)
			break
		}
		n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
		clear(v) // the pieces stay the caller's
		switch errno {
		case 0:
			g.advance(int(n))
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false, nil
		default:
			return true, errno
		}
	}
	return true, nil
}

// readInto reads from fd into the pieces, then tail, in one readv(2):
// the pieces are where the rest of a large message goes
// (frame.Assembler.Plan), tail the caller's buffer for what follows. iov
// is the caller's scratch.
func readInto(fd uintptr, pieces [][]byte, tail []byte, iov *[]iovec) (int, error) {
	v := (*iov)[:0]
	for i := 0; i <= len(pieces); i++ {
		p := tail
		if i < len(pieces) {
			p = pieces[i]
		}
		if len(p) > 0 {
			e := unix.Iovec{Base: &p[0]}
			e.SetLen(len(p))
			v = append(v, e)
		}
	}
	*iov = v
	if len(v) == 0 {
		return 0, nil
	}
	n, _, errno := unix.RawSyscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
	clear(v)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
