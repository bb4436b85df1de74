//go:build linux && (386 || amd64 || arm64 || loong64 || ppc64le || riscv64)

package ring

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Flags of a futexWaitv: a 32-bit word, private to this process.
const (
	futex2SizeU32 = 0x02
	futex2Private = 128
)

// napUnsupported is set once the kernel refused futex_waitv as unknown
// (before Linux 5.16) or not allowed (a seccomp filter): every later Nap
// reports errors.ErrUnsupported at once.
var napUnsupported atomic.Bool

// kernelTimespec is the kernel's 64-bit timespec, which futex_waitv takes
// on every architecture (unix.Timespec is 32-bit on 386).
type kernelTimespec struct {
	sec, nsec int64
}

// Nap sleeps until one of rs has something for Next (as Ready reports), a
// Wake, or d has passed, whichever comes first; on return no ring is left
// parked on its futex. It reports errors.ErrUnsupported, at once, where
// the kernel cannot wait on many futexes; a nil error says nothing of
// which of these ended the nap: the caller looks at its rings again.
//
// Every Reader of rs must be held (Reader.Hold) by the calling goroutine,
// which may call their Ready; a Reader not held or Ready already, or more
// than MaxNap of them, ends the nap at once. The words slept on lie in
// memory the peers can write: a peer that scribbles on its word, or
// absorbs the wake-up meant for this side, can end the nap early or late,
// never later than d. One goroutine naps on a Napper at a time.
func (n *Napper) Nap(rs []*Reader, d time.Duration) error {
	if napUnsupported.Load() {
		return errors.ErrUnsupported
	}
	if len(rs) == 0 || len(rs) > MaxNap || d <= 0 {
		return nil
	}
	for _, r := range rs {
		if !r.held || r.lease != 0 || r.err != nil {
			return nil
		}
	}
	st := n.state()
	now := monotonicNow()
	end := now + int64(d)
	if end < now {
		end = math.MaxInt64
	}
	ws := st.waiters[:len(rs)+1]
	ws[0] = futexWaitv{uaddr: uint64(uintptr(unsafe.Pointer(&st.bell))), flags: futex2SizeU32 | futex2Private}
	for i, r := range rs {
		ws[i+1] = futexWaitv{val: parkedFutex, uaddr: uint64(uintptr(unsafe.Pointer(r.s.rpark))), flags: futex2SizeU32}
	}
	defer func() {
		for _, r := range rs {
			r.s.rpark.CompareAndSwap(parkedFutex, 0)
		}
	}()
	for {
		if st.bell.Swap(0) != 0 {
			return nil
		}
		// Raise every word before the last look, as a futex wait does:
		// a writer publishes and then reads the word, so one of the two
		// sees the other.
		for _, r := range rs {
			r.s.rpark.Store(parkedFutex)
		}
		for _, r := range rs {
			if ok, err := r.ready(); ok || err != nil {
				return nil
			}
		}
		if monotonicNow() >= end {
			return nil
		}
		// A word that no longer holds what the wait expects (a Wake, a
		// writer's wake-up, a peer's scribbling) returns at once; the
		// loop looks again.
		ts := kernelTimespec{sec: end / 1e9, nsec: end % 1e9}
		_, _, errno := unix.Syscall6(unix.SYS_FUTEX_WAITV, uintptr(unsafe.Pointer(&ws[0])), uintptr(len(ws)), 0,
			uintptr(unsafe.Pointer(&ts)), unix.CLOCK_MONOTONIC, 0)
		switch errno {
		case 0, unix.EAGAIN, unix.EINTR, unix.ETIMEDOUT:
		case unix.ENOSYS, unix.EPERM:
			napUnsupported.Store(true)
			return errors.ErrUnsupported
		default:
			return errno
		}
	}
}

// monoBase pairs a reading of CLOCK_MONOTONIC, the clock of futex_waitv's
// timeout, with one of Go's clock, whose monotonic part is the same
// clock read without a system call.
var monoBase struct {
	once sync.Once
	mono int64
	at   time.Time
}

// monotonicNow is CLOCK_MONOTONIC in nanoseconds.
func monotonicNow() int64 {
	monoBase.once.Do(func() {
		var ts unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		monoBase.at = time.Now()
		monoBase.mono = ts.Nano()
	})
	return monoBase.mono + int64(time.Since(monoBase.at))
}

// futexWakePrivate wakes the waiters on word, a word of this process.
func futexWakePrivate(word *atomic.Uint32) {
	const futexWakePrivateOp = 1 | 128 // FUTEX_WAKE | FUTEX_PRIVATE_FLAG
	unix.RawSyscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWakePrivateOp, math.MaxInt32, 0, 0, 0)
}
