package perf

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Seams for tests. getrusage returns the struct by value so that calling
// through the variable does not move it to the heap.
var (
	getrusage = func(who int) (unix.Rusage, error) {
		var ru unix.Rusage
		err := unix.Getrusage(who, &ru)
		return ru, err
	}
	clockGettime = func(clock int32) (unix.Timespec, error) {
		var ts unix.Timespec
		err := unix.ClockGettime(clock, &ts)
		return ts, err
	}
	readFile = os.ReadFile
)

// userHZ is the unit of the utime and stime fields of /proc/<pid>/stat
// (USER_HZ). It is 100 on every Linux architecture Go supports; the kernel
// converts to it whatever its internal HZ is.
const userHZ = 100

// ProcessCPU returns the CPU time of this process so far (getrusage
// RUSAGE_SELF, microsecond resolution), all threads included. Safe for
// concurrent use.
func ProcessCPU() (CPUTime, error) { return rusage(unix.RUSAGE_SELF) }

// ChildrenCPU returns the CPU time of this process's children that have
// ended and been waited for (getrusage RUSAGE_CHILDREN). A running child is
// not included: use PidCPU or PidCPUClock for it. Safe for concurrent use.
func ChildrenCPU() (CPUTime, error) { return rusage(unix.RUSAGE_CHILDREN) }

func rusage(who int) (CPUTime, error) {
	ru, err := getrusage(who)
	if err != nil {
		return CPUTime{}, fmt.Errorf("perf: getrusage: %w", err)
	}
	return CPUTime{
		User:   time.Duration(ru.Utime.Nano()),
		System: time.Duration(ru.Stime.Nano()),
	}, nil
}

// PidCPU returns the user and system time of a running process, all its
// threads included, from /proc/<pid>/stat. The resolution is one clock tick
// (10 ms); PidCPUClock is exact but gives only the total. Safe for
// concurrent use.
func PidCPU(pid int) (CPUTime, error) {
	b, err := readFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return CPUTime{}, fmt.Errorf("perf: cpu of pid %d: %w", pid, err)
	}
	return parseStat(b)
}

// parseStat reads utime and stime (fields 14 and 15) of a /proc/<pid>/stat
// line. The command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func parseStat(b []byte) (CPUTime, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return CPUTime{}, fmt.Errorf("%w: no command field", ErrBadStat)
	}
	// After ")": field 3 (state) is the first.
	fields := bytes.Fields(b[i+1:])
	const utimeIdx, stimeIdx = 14 - 3, 15 - 3
	if len(fields) <= stimeIdx {
		return CPUTime{}, fmt.Errorf("%w: %d fields after the command", ErrBadStat, len(fields))
	}
	ut, err1 := strconv.ParseUint(string(fields[utimeIdx]), 10, 63)
	st, err2 := strconv.ParseUint(string(fields[stimeIdx]), 10, 63)
	if err1 != nil || err2 != nil {
		return CPUTime{}, fmt.Errorf("%w: utime %q stime %q", ErrBadStat, fields[utimeIdx], fields[stimeIdx])
	}
	tick := time.Second / userHZ
	return CPUTime{User: time.Duration(ut) * tick, System: time.Duration(st) * tick}, nil
}

// processCPUClock builds the clock id of a process's CPU-time clock, as
// clock_getcpuclockid(3) does: the negated pid shifted by three, with the
// "sched" clock type (2) and the per-process (not per-thread) bit clear.
func processCPUClock(pid int) int32 {
	const cpuclockSched = 2
	return int32((^pid)<<3 | cpuclockSched)
}

// PidCPUClock returns the total CPU time (user plus system) a process has
// used, in nanoseconds, from its CPU-time clock: every thread, including
// threads that have ended, at scheduler precision. Safe for concurrent use.
func PidCPUClock(pid int) (time.Duration, error) {
	ts, err := clockGettime(processCPUClock(pid))
	if err != nil {
		return 0, fmt.Errorf("perf: cpu clock of pid %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}
