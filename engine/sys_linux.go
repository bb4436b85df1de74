package engine

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerHalfClosed reports whether the peer of a connection gnet is closing
// only shut down its writing side (git clients may send a request and
// shutdown(SHUT_WR)): the socket then still takes our reply, once the
// peer reads (it may be full now, with a reply under way). A peer that
// closed completely raises POLLHUP.
func peerHalfClosed(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	if err != nil || n == 0 {
		return false
	}
	ev := fds[0].Revents
	return ev&unix.POLLRDHUP != 0 && ev&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) == 0
}

// fdExhausted reports errors that mean "no descriptor or memory for a new
// connection": the server backs off instead of stopping.
func fdExhausted(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM)
}

// soloSupported: solo waits need ppoll.
const soloSupported = true

// pollNow looks, without waiting, whether fd or bell is readable: a busy
// poll's look (loopState.exit). A raw system call: it runs in a loop on
// the event loop and never blocks.
func pollNow(fd, bell int) (ready, rang bool) {
	p := pollSet{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(bell), Events: unix.POLLIN}}
	var zero unix.Timespec
	n, _, e := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	if e != 0 || n == 0 {
		return false, false
	}
	return p[0].Revents != 0, p[1].Revents != 0
}

// pollSet is the loop's ppoll array for solo waits: the connection and the
// loop's doorbell.
type pollSet [2]unix.PollFd

// waitReadable waits, without a timeout (arming a timer per wait costs a
// sizeable share of a round trip's CPU), until fd or bell is readable, and
// reports whether fd is (readable, closed or in error: a read will tell).
func waitReadable(p *pollSet, fd, bell int) (bool, error) {
	p[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	p[1] = unix.PollFd{Fd: int32(bell), Events: unix.POLLIN}
	n, err := unix.Ppoll(p[:], nil, nil)
	if err != nil || n == 0 {
		return false, err
	}
	return p[0].Revents != 0, nil
}

// sysDup duplicates fd, close-on-exec.
func sysDup(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

// hangupPoll finds one-shot clients that hung up, for the reaper.
type hangupPoll struct {
	p    []unix.PollFd
	gone []bool
}

// check polls the shot descriptors of cs without waiting and reports, per
// connection, whether its peer closed completely: POLLHUP, which a half
// close does not raise. The result is valid until the next check.
func (h *hangupPoll) check(cs []*conn) []bool {
	h.p = h.p[:0]
	for _, c := range cs {
		h.p = append(h.p, unix.PollFd{Fd: int32(c.shotFD)}) // POLLHUP and POLLERR need no asking
	}
	h.gone = append(h.gone[:0], make([]bool, len(cs))...)
	if n, err := unix.Ppoll(h.p, &unix.Timespec{}, nil); err != nil || n == 0 {
		return h.gone
	}
	for i := range h.p {
		h.gone[i] = h.p[i].Revents&(unix.POLLHUP|unix.POLLERR) != 0
	}
	return h.gone
}

// awaitInput is inputWait's poll: it waits up to w.d for news on the new
// connection w.fd (w.events, or a hang-up or an error) or for a
// connection waiting on the listening socket lfd, whichever comes first.
// An interrupted or failed wait reports neither.
func awaitInput(w *inputWait, lfd int) {
	p := [2]unix.PollFd{{Fd: int32(w.fd), Events: w.events}, {Fd: int32(lfd), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(int64(w.d))
	w.news, w.queued = false, false
	if n, err := unix.Ppoll(p[:], &ts, nil); err != nil || n == 0 {
		return
	}
	w.news = p[0].Revents != 0
	w.queued = p[1].Revents != 0
}

// Events for inputWait: the first bytes of a request, or the end of the
// peer's writing side (a socket that holds part of a request already is
// always readable).
const (
	inputData int16 = unix.POLLIN
	inputEnd  int16 = unix.POLLRDHUP
)

// arenaAlloc maps size bytes (a multiple of the page size) for the memory
// budget's arena, outside the Go heap, so that a buffer dropped from the
// arena returns to the system at once instead of waiting for a garbage
// collection. Without memory it falls back to the heap.
func arenaAlloc(size int) []byte {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, 0, size)
	}
	return b[:0]
}

// arenaFree unmaps a buffer of arenaAlloc; nothing may use it after.
func arenaFree(b []byte) {
	if cap(b) == 0 {
		return
	}
	full := b[:cap(b)]
	if err := unix.Munmap(full); err != nil {
		return // a heap fallback: the collector frees it
	}
}
