package events

import (
	"strconv"

	"github.com/pktipc/pktipc/frame"
)

// ConnID names a connection, listener or external descriptor for the life
// of its Loop. IDs are never reused while the Loop lives, so an ID kept
// after its connection ended can only ever fail with ErrUnknownConn; it
// never reaches a newer connection. The zero ConnID names nothing.
type ConnID uint64

// Kind is an event's kind. The values are LibIPC's current event codes.
type Kind uint8

// The event kinds, with LibIPC's names and codes.
const (
	// Error: something went wrong that is not one connection's end: an
	// accept failure (descriptor exhaustion), a listener whose socket was
	// stolen. Err says what; Conn names the listener when there is one.
	Error Kind = iota
	// Connection: a client was accepted. Conn is the new connection and
	// Listener the service it came in on.
	Connection
	// Disconnection: a connection ended and is already closed. Err is nil
	// for a clean end (the peer closed between messages) and says why
	// otherwise (a truncated frame, an oversized one, a reset, a write
	// timeout). Reported once per connection, after all its messages.
	Disconnection
	// MessageRx: one whole message arrived on Conn. Data holds it.
	MessageRx
	// MessageTx: one message given to Schedule on Conn was written to the
	// kernel, in Schedule order; with Err set, it was dropped unsent
	// because the connection ended first.
	MessageTx
	// Timer: a timer set with SetTimer fired. Timer says which.
	Timer
	// External: the descriptor added with AddExternal as Conn is readable.
	// FD is that descriptor; the Loop never reads it.
	External
	// SwitchRx: a message arrived on Conn, one side of a switch, and was
	// passed to its partner (Data holds it as read, before any transform).
	SwitchRx
	// SwitchTx: a message relayed by a switch was written to Conn.
	SwitchTx
)

var kindNames = [...]string{"Error", "Connection", "Disconnection", "MessageRx", "MessageTx", "Timer", "External", "SwitchRx", "SwitchTx"}

// String returns the kind's name. Safe for concurrent use.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// TimerKind says which timer fired.
type TimerKind uint8

const (
	// Idle fires after its duration passes with no other event returned,
	// as LibIPC's context timer does: a steadily busy Loop never sees it.
	Idle TimerKind = iota + 1
	// Periodic fires every period whatever else happens; periods missed
	// while the application was away are reported once, in Event.Missed.
	Periodic
)

// String returns the timer's name. Safe for concurrent use.
func (t TimerKind) String() string {
	switch t {
	case Idle:
		return "Idle"
	case Periodic:
		return "Periodic"
	}
	return "TimerKind(" + strconv.Itoa(int(t)) + ")"
}

// Event is one thing that happened, as WaitEvent returns it.
type Event struct {
	Kind Kind
	// Conn is the connection (or listener, or external descriptor) the
	// event concerns; zero for Timer.
	Conn ConnID
	// Listener is, for Connection, the service the client came in on.
	Listener ConnID
	// FD is, for External, the ready descriptor; -1 otherwise.
	FD int
	// Data is the message of MessageRx and SwitchRx. It aliases the Loop's
	// buffers and stays valid until the next call of WaitEvent (or Run's
	// next callback): copy it to keep it.
	Data []byte
	// Type and UserType are the LibIPCC format's frame type and user type
	// byte (zero in the other formats).
	Type     frame.CType
	UserType uint8
	// Timer says which timer fired; Missed counts the periods of a
	// Periodic timer that passed unreported before this one.
	Timer  TimerKind
	Missed int
	// Err is the cause of an Error, of an abnormal Disconnection, or of a
	// MessageTx for a message that was dropped unsent.
	Err error
}

// Format is a connection's wire format.
type Format uint8

const (
	// PktLine is pktipc's own: a message is data pkt-lines up to a flush
	// packet, any size up to the Loop's message cap.
	PktLine Format = iota
	// LibIPC is the current LibIPC frame: a 4-byte big-endian length and
	// the payload, at most 99,992 bytes. Empty messages are refused when
	// sending, since a LibIPC peer takes them for a disconnection.
	LibIPC
	// LibIPCC is the old LibIPC C frame: type, 4-byte big-endian length,
	// user type, payload. Sending is capped at 1,999,988 payload bytes,
	// the most a C peer can hold; receiving accepts what the header
	// allows.
	LibIPCC
)

// String returns the format's name as ipcbench's --format flag spells it.
// Safe for concurrent use.
func (f Format) String() string {
	switch f {
	case PktLine:
		return "pktline"
	case LibIPC:
		return "libipc"
	case LibIPCC:
		return "libipc-c"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// ParseFormat is the inverse of Format.String. Safe for concurrent use.
func ParseFormat(s string) (Format, error) {
	for _, f := range []Format{PktLine, LibIPC, LibIPCC} {
		if f.String() == s {
			return f, nil
		}
	}
	return 0, &OptionError{Option: "format", Value: s, Reason: "want pktline, libipc or libipc-c"}
}

// SwitchResult is what a switch transform decided, with the meanings of
// LibIPC's callback results.
type SwitchResult uint8

const (
	// Forward passes the transformed message on (LibIPC's CB_NO_ERROR).
	Forward SwitchResult = iota
	// SwitchError ends the switch: both sides are closed (CB_ERROR).
	SwitchError
	// FDClosing says the side is going away: both sides are closed
	// (CB_FD_CLOSING).
	FDClosing
	// Ignore forwards nothing: a message internal to the protocol
	// (CB_IGNORE).
	Ignore
)

// Transform rewrites one message crossing a switch. msg is the message
// as read (valid only during the call); the result may be msg itself, or
// appended to dst, a scratch buffer the Loop reuses. Transforms run on
// the goroutine inside WaitEvent.
type Transform func(dst, msg []byte) ([]byte, SwitchResult)
