package ring

import (
	"errors"
	"fmt"
	"net"
	"os"
)

// Sentinel errors. Match them with errors.Is; the typed errors below unwrap
// to them.
var (
	// ErrClosed is returned by every call on a side after its Close. It
	// matches net.ErrClosed.
	ErrClosed = fmt.Errorf("ring: closed: %w", net.ErrClosed)

	// ErrPeerClosed means the reader closed its side: nothing written from
	// now on would be read.
	ErrPeerClosed = errors.New("ring: reader closed the ring")

	// ErrTimeout is returned when the side's deadline passes while it
	// waits. It matches os.ErrDeadlineExceeded.
	ErrTimeout = fmt.Errorf("ring: %w", os.ErrDeadlineExceeded)

	// ErrTooLarge means a record or message exceeds a limit: MaxRecord for
	// Reserve, the caller's limit for ReadMessage.
	ErrTooLarge = errors.New("ring: message too large")

	// ErrInvalid reports a bad argument or a call out of order (Commit
	// without Reserve, Next with a lease held).
	ErrInvalid = errors.New("ring: invalid argument")

	// ErrBadFile is the base of *FileError: a file offered as a ring was
	// refused.
	ErrBadFile = errors.New("ring: not a ring file")

	// ErrCorrupt is the base of *CorruptError: the peer wrote a value the
	// ring's invariants rule out.
	ErrCorrupt = errors.New("ring: corrupt ring")

	// ErrBrokenMessage means the writer stopped in the middle of a message
	// (a deadline passed between its records, the reader closed, the ring
	// was corrupt; the cause is wrapped too), so the stream cannot go on:
	// the writer closes its side, and its reader sees io.ErrUnexpectedEOF.
	ErrBrokenMessage = errors.New("ring: writer stopped inside a message")
)

// FileError says why a file was refused as a ring.
type FileError struct {
	Reason string // what was wrong, e.g. "not sealed against shrinking"
	Err    error  // the system call's error, if one failed
}

func (e *FileError) Error() string {
	if e.Err != nil {
		return "ring: not a ring file: " + e.Reason + ": " + e.Err.Error()
	}
	return "ring: not a ring file: " + e.Reason
}

// Unwrap returns ErrBadFile and the system call's error, if any.
func (e *FileError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrBadFile, e.Err}
	}
	return []error{ErrBadFile}
}

// CorruptError reports a value read from the shared header or a record
// header that breaks the ring's invariants. The side that saw it is ended.
type CorruptError struct {
	Field string // "head", "record header", "record length", "record flags", "padding"
	Value uint64 // the value read
	At    uint64 // the reader's or writer's own position when it was read
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("ring: corrupt ring: %s %#x at position %#x", e.Field, e.Value, e.At)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }
