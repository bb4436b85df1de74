// The ring's words are shared with another process: its 64-bit atomics
// must be lock-free there (not so on 32-bit arm and mips, where Go takes
// a lock within the process), and its headers little-endian, as the
// layout encodes them.

//go:build linux && (386 || amd64 || arm64 || loong64 || ppc64le || riscv64)

package ring

import (
	"io"
	"math"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported reports whether this build can make and map rings.
const Supported = true

// requiredSeals keep the file's size fixed for good.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// Create makes a ring with a data area of capacity bytes (a power of two
// from MinCapacity to MaxCapacity) in a new sealed memfd, and returns the
// memfd, close-on-exec. The caller owns it: it maps it with NewWriter or
// NewReader, passes it to the peer, and closes it when neither needs it
// (mappings outlive the descriptor).
func Create(capacity int) (*os.File, error) {
	if capacity < 0 || !validCapacity(uint64(capacity)) {
		return nil, ErrInvalid
	}
	fd, err := unix.MemfdCreate("pktipc-ring", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "pktipc-ring")
	if err := setUp(fd, uint64(capacity)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func setUp(fd int, capacity uint64) error {
	if err := unix.Ftruncate(fd, int64(headerSize+capacity)); err != nil {
		return os.NewSyscallError("ftruncate", err)
	}
	var hdr [16]byte
	initHeader(hdr[:], capacity)
	if _, err := unix.Pwrite(fd, hdr[:], 0); err != nil {
		return os.NewSyscallError("pwrite", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		return os.NewSyscallError("fcntl F_ADD_SEALS", err)
	}
	return nil
}

// NewWriter maps the ring in f and returns its writing side, which starts
// at the reader's head: a ring is written by one Writer from its start (a
// later one would write over records not yet read). f is not kept: the
// caller may close it. opts may be nil.
func NewWriter(f *os.File, opts *Options) (*Writer, error) {
	s, err := attach(f, opts)
	if err != nil {
		return nil, err
	}
	w, err := newWriter(s, opts)
	if err != nil {
		s.discard()
		return nil, err
	}
	return w, nil
}

// NewReader maps the ring in f and returns its reading side. f is not
// kept: the caller may close it. opts may be nil.
func NewReader(f *os.File, opts *Options) (*Reader, error) {
	s, err := attach(f, opts)
	if err != nil {
		return nil, err
	}
	r, err := newReader(s, opts)
	if err != nil {
		s.discard()
		return nil, err
	}
	return r, nil
}

// attach maps f and takes a duplicate of the doorbell in opts.
func attach(f *os.File, opts *Options) (*shared, error) {
	s, err := mapFile(f)
	if err != nil {
		return nil, err
	}
	if opts != nil && opts.Doorbell != nil {
		s.bell, err = dupFile(opts.Doorbell)
		if err != nil {
			s.discard()
			return nil, err
		}
	}
	return s, nil
}

// NewDoorbell makes a doorbell: a connected pair of non-blocking,
// close-on-exec Unix sockets. The waiting owner keeps the *Doorbell and
// waits for it to be readable (a byte means "look at your rings again":
// Drain it and Arm them); ring goes to the peer, which gives it as
// Options.Doorbell. The pair doubles as a liveness signal: Drain reports
// io.EOF once every copy of ring is closed, when the peer has gone.
func NewDoorbell() (wait *Doorbell, ring *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return &Doorbell{fd: fds[0]}, os.NewFile(uintptr(fds[1]), "ring-doorbell"), nil
}

// Fd returns the descriptor to watch for reading, for a poller of the
// caller's (epoll, an event loop). It stays valid until Close.
func (d *Doorbell) Fd() int { return d.fd }

// drainReads bounds the reads of one Drain: the ringing side belongs to
// the peer, which could otherwise keep the doorbell full and Drain
// reading for as long as it likes.
const drainReads = 4

// Drain reads the bytes the doorbell holds, so that it stops being
// readable until it is rung again. It reports io.EOF once the ringing
// side is gone. It reads a bounded amount: a doorbell rung faster than
// that stays readable, and a poller sees it again. The owner goroutine
// calls it.
func (d *Doorbell) Drain() error {
	var buf [4096]byte
	for range drainReads {
		n, err := unix.Read(d.fd, buf[:])
		switch {
		case n == 0 && err == nil:
			return io.EOF
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return nil
		case err != nil:
			return os.NewSyscallError("read", err)
		}
	}
	return nil
}

// Wait blocks until the doorbell is readable, for at most timeout
// (forever if negative), and reports whether it is. It is for owners
// without a poller of their own.
func (d *Doorbell) Wait(timeout time.Duration) (bool, error) {
	var end time.Time
	if timeout >= 0 {
		end = time.Now().Add(timeout)
	}
	pfd := [1]unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}}
	for {
		ms := -1
		if timeout >= 0 {
			// What is left: a signal must not restart the whole wait.
			ms = pollMillis(time.Until(end))
		}
		n, err := unix.Poll(pfd[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("poll", err)
		}
		if n == 0 && timeout >= 0 && time.Until(end) > 0 {
			continue // a wait longer than poll's range goes on
		}
		return n > 0, nil
	}
}

// pollMillis is d in poll's milliseconds, rounded up so that a wait ends
// at d or after, and held within poll's 32-bit range.
func pollMillis(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return int(min(ms, math.MaxInt32))
}

// Close closes the waiting end.
func (d *Doorbell) Close() error {
	if d.fd < 0 {
		return ErrClosed
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

var bellByte = []byte{1}

// ringBell sends one byte on a doorbell without ever blocking. A full
// socket already holds an unread ring, and a closed or bogus descriptor
// has nobody to wake, so errors are ignored.
func ringBell(fd int) {
	unix.Sendto(fd, bellByte, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
}

func closeBell(fd int) { unix.Close(fd) }

// dupFile returns a close-on-exec duplicate of f's descriptor.
func dupFile(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(u uintptr) {
		fd, dupErr = unix.FcntlInt(u, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	return fd, nil
}

// mapFile checks that f is a sealed memfd of a ring's size holding a
// ring's header, and maps it.
func mapFile(f *os.File) (*shared, error) {
	if f == nil {
		return nil, ErrInvalid
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var mem []byte
	var mapErr error
	if err := rc.Control(func(fd uintptr) { mem, mapErr = mapFD(int(fd)) }); err != nil {
		return nil, err
	}
	if mapErr != nil {
		return nil, mapErr
	}
	if word64(mem, offMagic).Load() != magic {
		unix.Munmap(mem)
		return nil, &FileError{Reason: "no ring header"}
	}
	return newShared(mem, unix.Munmap), nil
}

func mapFD(fd int) ([]byte, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, &FileError{Reason: "not a memfd that allows sealing", Err: os.NewSyscallError("fcntl F_GET_SEALS", err)}
	}
	if seals&requiredSeals != requiredSeals {
		return nil, &FileError{Reason: "not sealed against shrinking, growing and resealing"}
	}
	if seals&(unix.F_SEAL_WRITE|unix.F_SEAL_FUTURE_WRITE) != 0 {
		return nil, &FileError{Reason: "sealed against writing"}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &FileError{Reason: "fstat failed", Err: os.NewSyscallError("fstat", err)}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &FileError{Reason: "not a regular file"}
	}
	if st.Size < headerSize || !validCapacity(uint64(st.Size-headerSize)) {
		return nil, &FileError{Reason: "size is not a header page plus a power-of-two data area"}
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, &FileError{Reason: "mmap failed", Err: os.NewSyscallError("mmap", err)}
	}
	populate(mem)
	return mem, nil
}

// populate faults in the whole mapping, writable, now: the pages of a
// ring are all used once its records have gone round it, and a fault in
// the data path costs a message a trap (and, in a virtual machine whose
// host backs guest memory lazily, an exit to the host) where set-up pays
// them all at once. The first side to map the memfd allocates its pages.
// Kernels before 5.14 lack the advice: the pages are then faulted in as
// they are first used.
func populate(mem []byte) {
	_ = unix.Madvise(mem, unix.MADV_POPULATE_WRITE)
}

// futexWait sleeps while *word == val, for at most timeout (forever if
// negative), or until woken. Spurious returns are fine: callers re-check.
// Shared (not private) futexes, so that the peer process can wake us.
func futexWait(word *atomic.Uint32, val uint32, timeout time.Duration) {
	const futexWaitOp = 0
	var tsp unsafe.Pointer
	var ts unix.Timespec
	if timeout >= 0 {
		ts = unix.NsecToTimespec(int64(timeout))
		tsp = unsafe.Pointer(&ts)
	}
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWaitOp, uintptr(val), uintptr(tsp), 0, 0)
	_ = errno // EAGAIN (the word changed), EINTR, ETIMEDOUT: the caller re-checks
}

// futexWake wakes the waiters on word.
func futexWake(word *atomic.Uint32) {
	const futexWakeOp = 1
	// All waiters: the peer may be sleeping on the word too. A wake never
	// blocks, so it skips the scheduler's bookkeeping for one that might.
	unix.RawSyscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWakeOp, math.MaxInt32, 0, 0, 0)
}
