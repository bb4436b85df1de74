package fdpass

import (
	"errors"
	"fmt"
	"net"
)

// Sentinel errors. Match them with errors.Is; the typed errors below unwrap
// to them.
var (
	// ErrClosed is returned to every pending and later call once Close has
	// run. It matches net.ErrClosed.
	ErrClosed = fmt.Errorf("fdpass: passer closed: %w", net.ErrClosed)

	// ErrQueueFull means the send queue holds its maximum number of items
	// (MaxQueue). Nothing was queued; the caller still owns the descriptors.
	ErrQueueFull = errors.New("fdpass: send queue full")

	// ErrProtocol is the base of every *ProtocolError: the peer broke the
	// wire format, so the stream cannot be trusted and the passer fails.
	ErrProtocol = errors.New("fdpass: protocol error")

	// ErrTruncated is the base of *TruncatedError: the kernel delivered
	// fewer descriptors than the message declared (MSG_CTRUNC).
	ErrTruncated = errors.New("fdpass: descriptors truncated")

	// ErrTooLarge means a message exceeds a configured limit (data bytes or
	// descriptors per message).
	ErrTooLarge = errors.New("fdpass: message too large")

	// ErrBackpressure means the kernel refused descriptors with
	// ETOOMANYREFS (too many in flight for the sender's RLIMIT_NOFILE) for
	// longer than the back-pressure deadline: the peer is not draining.
	ErrBackpressure = errors.New("fdpass: peer not draining descriptors (ETOOMANYREFS) before the deadline")

	// ErrSelfPass refuses to pass a connection's own socket over itself,
	// which would create a reference cycle only the kernel's garbage
	// collector could break.
	ErrSelfPass = errors.New("fdpass: refusing to pass a connection's own socket over itself")

	// ErrUnclaimed means received descriptors sat unclaimed longer than
	// MaxUnclaimedAge; the passer fails and closes them.
	ErrUnclaimed = errors.New("fdpass: received descriptors left unclaimed too long")

	// ErrRawData means data was given to Send in Raw mode, whose wire shape
	// carries exactly one 0x00 byte per descriptor and nothing else.
	ErrRawData = errors.New("fdpass: raw mode carries descriptors only, no data")

	// ErrInvalid reports a bad argument: a negative descriptor, a nil file,
	// an empty raw send, a bad option value.
	ErrInvalid = errors.New("fdpass: invalid argument")

	// ErrPeerClosed means the peer closed its end: a send found nobody to
	// take the message (EPIPE). Items not in the kernel yet fail with it.
	// An orderly close seen by the receiver is io.EOF instead.
	ErrPeerClosed = errors.New("fdpass: peer closed the connection")

	// ErrPeerReset means the connection was reset (ECONNRESET): the peer
	// closed with bytes of ours unread, or died.
	ErrPeerReset = errors.New("fdpass: connection reset by peer")

	// ErrNoEnv means FromEnv found no usable descriptor in the environment.
	ErrNoEnv = errors.New("fdpass: no passer socket in the environment")
)

// TruncatedError reports a message whose descriptors the kernel truncated
// (MSG_CTRUNC): the receiver's descriptor table was full, or a security
// module refused some descriptors. The descriptors that did arrive have been
// closed; the message's data is still delivered and the byte stream is still
// aligned, so the passer continues unless StrictTruncation is set.
type TruncatedError struct {
	Want int // descriptors the message declared
	Got  int // descriptors the kernel installed (all closed by the passer)
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("fdpass: descriptors truncated (MSG_CTRUNC): message declared %d, kernel delivered %d (closed)", e.Want, e.Got)
}

// Unwrap returns ErrTruncated.
func (e *TruncatedError) Unwrap() error { return ErrTruncated }

// ProtocolError describes a wire-format violation by the peer. Every
// descriptor that arrived with the offending bytes has been closed.
type ProtocolError struct {
	Offset uint64 // stream offset of the offending byte
	Reason string
	Want   int // descriptors declared, where the error is a count mismatch
	Got    int // descriptors that arrived, where the error is a count mismatch
}

func (e *ProtocolError) Error() string {
	if e.Want != 0 || e.Got != 0 {
		return fmt.Sprintf("fdpass: protocol error at stream offset %d: %s (declared %d descriptors, %d arrived)", e.Offset, e.Reason, e.Want, e.Got)
	}
	return fmt.Sprintf("fdpass: protocol error at stream offset %d: %s", e.Offset, e.Reason)
}

// Unwrap returns ErrProtocol.
func (e *ProtocolError) Unwrap() error { return ErrProtocol }
