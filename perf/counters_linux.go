package perf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Seams for tests: a test replaces perfEventOpen to inject EACCES or ENOENT.
var (
	perfEventOpen = unix.PerfEventOpen
	readDir       = os.ReadDir
)

// readValueSize is the size of one read(2) of a counter opened with
// readFormat: the value, then the times enabled and running.
const readValueSize = 3 * 8

const readFormat = unix.PERF_FORMAT_TOTAL_TIME_ENABLED | unix.PERF_FORMAT_TOTAL_TIME_RUNNING

func eventAttr(e Event) (typ uint32, config uint64) {
	switch e {
	case Cycles:
		return unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_CPU_CYCLES
	case Instructions:
		return unix.PERF_TYPE_HARDWARE, unix.PERF_COUNT_HW_INSTRUCTIONS
	default:
		return unix.PERF_TYPE_SOFTWARE, unix.PERF_COUNT_SW_CONTEXT_SWITCHES
	}
}

// errKernelOnly: context switches happen in kernel mode, so counting them
// in user mode only, where the kernel allows no more, would count none.
var errKernelOnly = fmt.Errorf("context switches are counted in kernel mode, and only user mode may be counted here: %w", unix.EACCES)

// refused reports whether err means "the kernel will not count this here",
// as opposed to a failure of ours (EMFILE, EINVAL from a bad attribute).
func refused(err error) bool {
	switch {
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM),
		errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP),
		errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENOSYS):
		return true
	}
	return false
}

// Counters counts events of one process, all its threads included. Open it
// with OpenCounters; Read and Close may be called from any goroutine but not
// concurrently with each other.
type Counters struct {
	fds      [numEvents][]int
	errs     [numEvents]error
	userOnly bool
}

// OpenCounters starts counting the given events (AllEvents when none) for
// process pid, or for this process when pid is 0. It opens one counter per
// thread that exists now, with inheritance so that threads those start
// later are counted too.
//
// An event the kernel refuses is left out and Err(e) says why; the error is
// nil as long as at least one event could be opened. When none could, the
// error matches ErrUnavailable. If the kernel refuses to count kernel-mode
// events (perf_event_paranoid 2 without CAP_PERFMON), the counters fall back
// to user mode only, which UserOnly reports; context switches, which
// happen in kernel mode, are then unavailable rather than counted as none.
func OpenCounters(pid int, events ...Event) (*Counters, error) {
	if len(events) == 0 {
		events = AllEvents
	}
	if pid == 0 {
		pid = os.Getpid()
	}
	tids, err := threads(pid)
	if err != nil {
		return nil, err
	}
	c := &Counters{}
	for _, e := range events {
		if e < 0 || e >= numEvents {
			c.Close()
			return nil, fmt.Errorf("perf: unknown event %d", int(e))
		}
		if c.fds[e] != nil || c.errs[e] != nil {
			continue
		}
		if err := c.open(e, tids); err != nil {
			if !refused(err) {
				c.Close()
				return nil, fmt.Errorf("perf: open %s for pid %d: %w", e, pid, err)
			}
			c.errs[e] = &UnavailableError{Event: e, Err: err}
		}
	}
	var errs []error
	opened := false
	for _, e := range events {
		if c.fds[e] != nil {
			opened = true
		} else if c.errs[e] != nil {
			errs = append(errs, c.errs[e])
		}
	}
	if !opened {
		c.Close()
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// open opens event e on every thread; on any error it closes what it opened.
func (c *Counters) open(e Event, tids []int) error {
	if e == ContextSwitches && c.userOnly {
		return errKernelOnly
	}
	typ, config := eventAttr(e)
	attr := unix.PerfEventAttr{
		Type:        typ,
		Size:        uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Config:      config,
		Read_format: readFormat,
		Bits:        unix.PerfBitInherit,
	}
	if c.userOnly {
		attr.Bits |= unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv
	}
	var fds []int
	for _, tid := range tids {
		fd, err := perfEventOpen(&attr, tid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil && errors.Is(err, unix.EACCES) && !c.userOnly && e != ContextSwitches {
			// perf_event_paranoid >= 2 allows user-mode counting only.
			attr.Bits |= unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv
			fd, err = perfEventOpen(&attr, tid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
			if err == nil {
				c.userOnly = true
			}
		}
		if errors.Is(err, unix.ESRCH) {
			continue // the thread ended since we listed it
		}
		if err != nil {
			closeAll(fds)
			return err
		}
		fds = append(fds, fd)
	}
	if len(fds) == 0 {
		return unix.ESRCH
	}
	c.fds[e] = fds
	return nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// threads lists the thread ids of process pid from /proc/<pid>/task.
func threads(pid int) ([]int, error) {
	ents, err := readDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, fmt.Errorf("perf: threads of pid %d: %w", pid, err)
	}
	tids := make([]int, 0, len(ents))
	for _, ent := range ents {
		if tid, err := strconv.Atoi(ent.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// Err returns nil when event e is being counted, and otherwise why not (an
// *UnavailableError, or a plain error when e was not asked for).
func (c *Counters) Err(e Event) error {
	if e < 0 || e >= numEvents {
		return fmt.Errorf("perf: unknown event %d", int(e))
	}
	if c.fds[e] != nil {
		return nil
	}
	if c.errs[e] != nil {
		return c.errs[e]
	}
	return fmt.Errorf("perf: %s was not requested", e)
}

// UserOnly reports whether the counters exclude kernel mode, because the
// kernel allowed user-mode counting only.
func (c *Counters) UserOnly() bool { return c.userOnly }

// Read returns the counts since OpenCounters, summed over threads. When the
// kernel multiplexed a hardware counter (more events than PMU slots), the
// count is scaled by enabled/running time, as perf stat does.
func (c *Counters) Read() (Sample, error) {
	var s Sample
	var buf [readValueSize]byte
	for e := range numEvents {
		if c.fds[e] == nil {
			continue
		}
		var sum uint64
		for _, fd := range c.fds[e] {
			n, err := unix.Read(fd, buf[:])
			if err != nil {
				return Sample{}, fmt.Errorf("perf: read %s: %w", e, err)
			}
			if n != readValueSize {
				return Sample{}, fmt.Errorf("perf: read %s: %d bytes, want %d", e, n, readValueSize)
			}
			sum += scale(binary.NativeEndian.Uint64(buf[0:]),
				binary.NativeEndian.Uint64(buf[8:]), binary.NativeEndian.Uint64(buf[16:]))
		}
		s.values[e] = sum
		s.have[e] = true
	}
	return s, nil
}

// scale extrapolates a multiplexed count to the whole enabled time.
func scale(value, enabled, running uint64) uint64 {
	if running == 0 || running >= enabled {
		return value
	}
	return uint64(float64(value) * float64(enabled) / float64(running))
}

// Close releases every counter. It is idempotent.
func (c *Counters) Close() error {
	for e := range numEvents {
		closeAll(c.fds[e])
		c.fds[e] = nil
	}
	return nil
}
