package bench

import (
	"errors"
	"fmt"
)

var (
	// ErrUnavailable is matched by every *UnavailableError: a peer that
	// cannot run on this machine or with these options.
	ErrUnavailable = errors.New("bench: peer unavailable")
	// ErrUsage is matched by errors in a Selection: an unknown scenario or
	// peer, a bad size, a missing test-tool. Front ends exit with status 2.
	ErrUsage = errors.New("bench: bad selection")
	// ErrServer is matched by *ServerError.
	ErrServer = errors.New("bench: server failed")
	// ErrNoWindow is returned when a peer's client returned without marking
	// the measured window with Meter.Start and Meter.Stop.
	ErrNoWindow = errors.New("bench: client did not mark the measured window")
	// ErrNoOps is returned when a run measured no operation at all.
	ErrNoOps = errors.New("bench: no operation completed in the measured window")
)

// UnavailableError says why a peer cannot run here.
type UnavailableError struct {
	Peer   string
	Reason string
	Err    error // the underlying failure, if any
}

// Error says which peer cannot run and why. Any goroutine may call it.
func (e *UnavailableError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("bench: peer %s unavailable: %s: %v", e.Peer, e.Reason, e.Err)
	}
	return fmt.Sprintf("bench: peer %s unavailable: %s", e.Peer, e.Reason)
}

// Unwrap returns the underlying failure. Any goroutine may call it.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnavailable. Any goroutine may call it.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// ServerError reports a server child that failed to start or died, with the
// end of what it wrote on its standard error.
type ServerError struct {
	Peer   string
	Stage  string // "start", "ready", "run" or "stop"
	Stderr string // last lines of the child's standard error
	Err    error
}

// Error says which server failed at which stage, with the end of its
// standard error. Any goroutine may call it.
func (e *ServerError) Error() string {
	s := fmt.Sprintf("bench: %s server: %s: %v", e.Peer, e.Stage, e.Err)
	if e.Stderr != "" {
		s += "\n" + e.Stderr
	}
	return s
}

// Unwrap returns the underlying failure. Any goroutine may call it.
func (e *ServerError) Unwrap() error { return e.Err }

// Is reports whether target is ErrServer. Any goroutine may call it.
func (e *ServerError) Is(target error) bool { return target == ErrServer }

// TestToolError reports a --test-tool path that cannot be used.
type TestToolError struct {
	Path   string
	Reason string
	Err    error
}

// Error says what is wrong with the test-tool path. Any goroutine may call
// it.
func (e *TestToolError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("bench: test-tool %q %s: %v", e.Path, e.Reason, e.Err)
	}
	return fmt.Sprintf("bench: test-tool %q %s", e.Path, e.Reason)
}

// Unwrap returns the underlying failure. Any goroutine may call it.
func (e *TestToolError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUsage: a bad test-tool is a usage error.
// Any goroutine may call it.
func (e *TestToolError) Is(target error) bool { return target == ErrUsage }

func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, args...)...)
}
