package perf

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Seams for tests.
var (
	schedSetaffinity = unix.SchedSetaffinity
	schedGetaffinity = unix.SchedGetaffinity
)

// SetAffinity pins the calling OS thread to the given CPUs
// (sched_setaffinity on thread 0). A goroutine moves between threads, so
// call runtime.LockOSThread first and keep the goroutine locked while the
// pinning matters; threads created later by this one inherit the mask.
func SetAffinity(cpus ...int) error {
	if len(cpus) == 0 {
		return fmt.Errorf("perf: set affinity: %w", ErrNoCPUs)
	}
	var set unix.CPUSet
	for _, c := range cpus {
		if c < 0 || c >= len(set)*64 {
			return fmt.Errorf("perf: set affinity: cpu %d out of range", c)
		}
		set.Set(c)
	}
	if err := schedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("perf: sched_setaffinity %v: %w", cpus, err)
	}
	return nil
}

// Affinity returns the CPUs the calling OS thread may run on, in increasing
// order. As with SetAffinity, the answer is about the current thread, so
// lock the goroutine to it when that matters.
func Affinity() ([]int, error) {
	var set unix.CPUSet
	if err := schedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("perf: sched_getaffinity: %w", err)
	}
	cpus := make([]int, 0, set.Count())
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
