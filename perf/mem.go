package perf

// Memory is what a process holds: resident memory now and at its peak, in
// bytes, its threads, and its open descriptors (-1 when they could not be
// counted).
type Memory struct {
	RSS     int64
	PeakRSS int64
	Threads int64
	FDs     int
}
