package events

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error of this package matches one of them with
// errors.Is, or wraps the system's cause.
var (
	// ErrClosed: the Loop, or the connection, is closed.
	ErrClosed = errors.New("events: closed")
	// ErrUnknownConn: no live connection has that ID (it ended, or never
	// existed), or it is the wrong kind for the call.
	ErrUnknownConn = errors.New("events: unknown connection")
	// ErrQueueFull: Schedule found the connection's outbound queue at its
	// bound; the peer is not reading.
	ErrQueueFull = errors.New("events: outbound queue full")
	// ErrTooLarge: a message over the cap, sent or announced by a peer.
	ErrTooLarge = errors.New("events: message too large")
	// ErrTruncated: the peer ended in the middle of a frame.
	ErrTruncated = errors.New("events: connection ended inside a frame")
	// ErrWriteTimeout: Write could not put the message in the kernel in
	// time (the peer is not reading).
	ErrWriteTimeout = errors.New("events: write timed out")
	// ErrBadName: a service name that cannot name a socket.
	ErrBadName = errors.New("events: invalid service name")
	// ErrSwitched: the connection belongs to a switch already.
	ErrSwitched = errors.New("events: connection already switched")
	// ErrLocked: LibIPC's single-instance lock is held by another process.
	ErrLocked = errors.New("events: service lock held by another instance")
	// ErrBuffered: the connection cannot be handed over because the Loop
	// already read bytes from it that nobody has taken.
	ErrBuffered = errors.New("events: unread bytes buffered")
)

// ConnError says which connection an error concerns. errors.Is matches
// its cause.
type ConnError struct {
	Conn ConnID
	Op   string // "read", "write", "schedule", "accept", ...
	Err  error
}

// Error names the operation, the connection and the cause. Safe for
// concurrent use.
func (e *ConnError) Error() string {
	return fmt.Sprintf("events: %s on connection %d: %v", e.Op, e.Conn, e.Err)
}

// Unwrap returns the cause. Safe for concurrent use.
func (e *ConnError) Unwrap() error { return e.Err }

// SizeError says a message is larger than allowed. errors.Is(err,
// ErrTooLarge) holds.
type SizeError struct {
	Size, Max int64
}

// Error gives both sizes. Safe for concurrent use.
func (e *SizeError) Error() string {
	return fmt.Sprintf("events: message of %d bytes, at most %d allowed", e.Size, e.Max)
}

// Is makes errors.Is(err, ErrTooLarge) true. Safe for concurrent use.
func (e *SizeError) Is(target error) bool { return target == ErrTooLarge }

// OptionError reports an invalid option value.
type OptionError struct {
	Option string
	Value  any
	Reason string
}

// Error names the option, its value and what is wrong. Safe for
// concurrent use.
func (e *OptionError) Error() string {
	return fmt.Sprintf("events: option %s = %v: %s", e.Option, e.Value, e.Reason)
}

func unknown(id ConnID, op string) error {
	return &ConnError{Conn: id, Op: op, Err: ErrUnknownConn}
}
