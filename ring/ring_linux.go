package ring

import (
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

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

// NewWriter maps the ring in f and returns its writing side. f is not
// kept: the caller may close it. opts may be nil.
func NewWriter(f *os.File, opts *Options) (*Writer, error) {
	s, err := mapFile(f)
	if err != nil {
		return nil, err
	}
	w, err := newWriter(s, opts)
	if err != nil {
		unix.Munmap(s.mem)
		return nil, err
	}
	return w, nil
}

// NewReader maps the ring in f and returns its reading side. f is not
// kept: the caller may close it. opts may be nil.
func NewReader(f *os.File, opts *Options) (*Reader, error) {
	s, err := mapFile(f)
	if err != nil {
		return nil, err
	}
	return newReader(s, opts), nil
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
	return mem, nil
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

// futexWake wakes one waiter on word.
func futexWake(word *atomic.Uint32) {
	const futexWakeOp = 1
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWakeOp, 1, 0, 0, 0)
}
