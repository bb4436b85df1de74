package perf

import "time"

// CPUTime is processor time split into user and kernel (system) time.
type CPUTime struct {
	User   time.Duration
	System time.Duration
}

// Total returns user plus system time.
func (c CPUTime) Total() time.Duration { return c.User + c.System }

// Sub returns c minus base, field by field: the CPU time spent between two
// readings.
func (c CPUTime) Sub(base CPUTime) CPUTime {
	return CPUTime{User: c.User - base.User, System: c.System - base.System}
}
