// Package perf holds the measurement primitives of pktipc's benchmarks: a
// monotonic clock, CPU time of this process, of its waited-for children and
// of any process by pid, hardware and software counters through
// perf_event_open(2), and CPU affinity of the calling thread.
//
// Counters degrade instead of failing: where the kernel refuses an event
// (no PMU in a virtual machine, perf_event_paranoid, seccomp), OpenCounters
// keeps the events it could open and reports the others as
// *UnavailableError, which matches ErrUnavailable. A report prints such an
// event as "n/a".
//
// Everything except Now is Linux only; elsewhere the functions return
// errors.ErrUnsupported so that callers build and degrade everywhere.
//
// perf imports nothing else from pktipc; golang.org/x/sys/unix appears only
// in its _linux.go files.
package perf
