package perf

import (
	"errors"
	"fmt"
)

// ErrBadStat is returned when a /proc/<pid>/stat line cannot be parsed.
var ErrBadStat = errors.New("perf: malformed /proc stat line")

// ErrNoCPUs is returned by SetAffinity when given no CPU.
var ErrNoCPUs = errors.New("perf: no cpus given")

// ErrUnavailable is matched by errors.Is for every counter the kernel
// refused to open (see UnavailableError).
var ErrUnavailable = errors.New("perf: counter not available")

// UnavailableError says why one counter event could not be opened. Err is
// the kernel's answer (EACCES, ENOENT, EOPNOTSUPP, ...).
type UnavailableError struct {
	Event Event
	Err   error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("perf: %s not available: %v", e.Event, e.Err)
}

// Unwrap returns the kernel's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }
