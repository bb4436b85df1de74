package frame

import (
	"errors"
	"fmt"
	"io"
)

// Sentinel errors. Decoding failures come wrapped in an [*Error] (pkt-line)
// or a [*LibIPCError] (LibIPC) that says where and what; test with errors.Is.
var (
	// ErrBadHeader: a byte of the 4-byte pkt-line header is not a hex digit.
	ErrBadHeader = errors.New("frame: non-hex byte in packet header")
	// ErrBadLength: the header is 0003, a length no packet can have.
	ErrBadLength = errors.New("frame: invalid packet length")
	// ErrTooLong: a declared length is above the format's limit (pkt-line:
	// header value over 65520; LibIPC: payload over the frame limit).
	ErrTooLong = errors.New("frame: declared length too long")
	// ErrTooLarge: a message's total payload would exceed the assembler cap.
	ErrTooLarge = errors.New("frame: message exceeds size cap")
	// ErrUnexpectedPacket: a delim (0001) or response-end (0002) packet in
	// Persistent mode, where only a flush may end a message.
	ErrUnexpectedPacket = errors.New("frame: unexpected control packet")
	// ErrNoBuffer: the Assembler's BufferSource refused a buffer for the
	// message (its owner's memory budget is spent).
	ErrNoBuffer = errors.New("frame: no buffer for the message")
	// ErrUnknownType: an old-LibIPC frame whose type byte is not one of the
	// four known types.
	ErrUnknownType = errors.New("frame: unknown LibIPC message type")
	// ErrEmptyFrame: an empty LibIPC payload refused by the compatibility
	// encoder, because a LibIPC Zig peer reads it as a disconnection.
	ErrEmptyFrame = errors.New("frame: empty LibIPC frame")

	// errInvalidCount: an io.Reader or io.Writer broke its contract.
	errInvalidCount = errors.New("frame: invalid byte count from io.Reader or io.Writer")
	// errBufferFull: a Reader could not make room; Decode and the Assembler
	// never need more than MinReadBuffer bytes, so this is a guard.
	errBufferFull = errors.New("frame: read buffer full")
)

// Error describes a pkt-line decoding failure: which rule was broken and
// where. Errors are fatal to a stream; there is no resynchronisation after a
// bad header.
type Error struct {
	// Err is one of ErrBadHeader, ErrBadLength, ErrTooLong, ErrTooLarge,
	// ErrUnexpectedPacket, ErrNoBuffer, or io.ErrUnexpectedEOF for a
	// truncated stream.
	Err error
	// Offset is the offset of the offending packet's header: relative to the
	// start of the buffer for Decode, counted from the start of the stream
	// for an Assembler or Reader. For a truncation it is where the incomplete
	// packet (or the missing terminator) starts.
	Offset int64
	// Header holds the header bytes that were present, at most 4; the rest
	// are zero.
	Header [4]byte
	// Length is the declared packet length (the header value, header
	// included), or -1 if the header was incomplete or not valid hex.
	Length int
}

// Error formats the failure; for a bad header the four bytes are quoted the
// way Go quotes strings, so NUL and non-ASCII bytes stay readable.
func (e *Error) Error() string {
	switch {
	case e.Err == io.ErrUnexpectedEOF && e.Length < 0:
		return fmt.Sprintf("frame: truncated stream at offset %d: %v", e.Offset, e.Err)
	case e.Err == io.ErrUnexpectedEOF:
		return fmt.Sprintf("frame: truncated packet at offset %d (header %q, length %d): %v",
			e.Offset, e.Header[:], e.Length, e.Err)
	case e.Length < 0:
		return fmt.Sprintf("%v at offset %d (header %q)", e.Err, e.Offset, e.Header[:])
	default:
		return fmt.Sprintf("%v at offset %d (header %q, length %d)", e.Err, e.Offset, e.Header[:], e.Length)
	}
}

// Unwrap returns the sentinel (or io.ErrUnexpectedEOF).
func (e *Error) Unwrap() error { return e.Err }

// newError builds an *Error from the header bytes at the start of hdr (at most
// 4 are kept).
func newError(err error, off int64, hdr []byte, length int) *Error {
	e := &Error{Err: err, Offset: off, Length: length}
	copy(e.Header[:], hdr)
	return e
}

// LibIPCError describes a LibIPC decoding failure.
type LibIPCError struct {
	// Err is ErrTooLong or ErrUnknownType.
	Err error
	// Offset of the frame's first byte, relative to the decoded buffer.
	Offset int64
	// Type is the old-LibIPC type byte, or -1 for the current (Zig) format.
	Type int
	// Length is the declared payload length, or -1 when it was not read.
	Length int64
}

// Error formats the failure.
func (e *LibIPCError) Error() string {
	if e.Type < 0 {
		return fmt.Sprintf("%v at offset %d (payload length %d)", e.Err, e.Offset, e.Length)
	}
	return fmt.Sprintf("%v at offset %d (type %d, payload length %d)", e.Err, e.Offset, e.Type, e.Length)
}

// Unwrap returns the sentinel.
func (e *LibIPCError) Unwrap() error { return e.Err }
