package frame

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// LibIPC limits, for its two wire formats: the current Zig library's and
// the old C library's.
const (
	// LibIPCHeaderSize is the current (Zig 0.1.0) LibIPC header: a 4-byte
	// big-endian payload length.
	LibIPCHeaderSize = 4
	// LibIPCMaxPayload is the largest payload a LibIPC Zig peer sends or
	// accepts: its 100,000-byte buffer less 4 bytes of slack and the header
	// (IPC_MAX_MESSAGE_SIZE 99,996 includes the header).
	LibIPCMaxPayload = 99992

	// LibIPCCHeaderSize is the old (C 0.7.2) LibIPC header: type, 4-byte
	// big-endian payload length, user type.
	LibIPCCHeaderSize = 6
	// LibIPCCMaxPayload is the largest payload the old C library's header
	// check lets through (2,000,000 bytes per frame including the header),
	// and the most its decoder here accepts.
	LibIPCCMaxPayload = 2000000 - LibIPCCHeaderSize
	// LibIPCCMaxSend is the largest payload a C peer can hold: its receive
	// buffer (1,999,994 bytes) includes the header, so a larger frame that
	// its header check passes makes it fail. The encoders send no more.
	LibIPCCMaxSend = 1999994 - LibIPCCHeaderSize
)

// DecodeLibIPC decodes the current LibIPC frame (4-byte big-endian length,
// then the payload) at the start of b.
//
// maxPayload caps the declared length; <= 0 means LibIPCMaxPayload, the
// limit of a LibIPC peer (a larger cap accepts frames no LibIPC peer sends).
// A length over the cap is rejected as soon as the 4 header bytes are
// present, with a *LibIPCError wrapping ErrTooLong (Offset 0, Type -1).
//
// With fewer bytes than the frame needs it returns n == 0 and a nil error
// without allocating. Otherwise payload is b[4:n], aliasing b with capacity
// limited to its length; an empty frame (00 00 00 00) gives an empty,
// non-nil payload and n == 4. Safe for concurrent use.
func DecodeLibIPC(b []byte, maxPayload int) (payload []byte, n int, err error) {
	if len(b) < LibIPCHeaderSize {
		return nil, 0, nil
	}
	if maxPayload <= 0 {
		maxPayload = LibIPCMaxPayload
	}
	l := binary.BigEndian.Uint32(b)
	if uint64(l) > uint64(maxPayload) {
		return nil, 0, &LibIPCError{Err: ErrTooLong, Type: -1, Length: int64(l)}
	}
	if uint64(len(b)) < LibIPCHeaderSize+uint64(l) {
		return nil, 0, nil // compared in 64 bits: l may be near the int limit of a 32-bit build
	}
	end := LibIPCHeaderSize + int(l)
	return b[LibIPCHeaderSize:end:end], end, nil
}

// AppendLibIPC appends payload as one current-format LibIPC frame. A payload
// over LibIPCMaxPayload is refused with an error wrapping ErrTooLong and dst
// is returned unchanged. An empty payload is encoded (00 00 00 00); use
// AppendLibIPCCompat towards real LibIPC peers.
func AppendLibIPC(dst, payload []byte) ([]byte, error) {
	dst, err := AppendLibIPCHeader(dst, len(payload))
	if err != nil {
		return dst, err
	}
	return append(dst, payload...), nil
}

// AppendLibIPCCompat is AppendLibIPC for a LibIPC Zig peer: it also refuses
// an empty payload (ErrEmptyFrame), which that peer would take for a
// disconnection.
func AppendLibIPCCompat(dst, payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return dst, ErrEmptyFrame
	}
	return AppendLibIPC(dst, payload)
}

// AppendLibIPCHeader appends only the 4-byte header of a frame carrying
// payloadLen bytes, for writev. payloadLen must be 0..LibIPCMaxPayload.
func AppendLibIPCHeader(dst []byte, payloadLen int) ([]byte, error) {
	if payloadLen < 0 || payloadLen > LibIPCMaxPayload {
		return dst, fmt.Errorf("%w: LibIPC payload of %d bytes, at most %d allowed", ErrTooLong, payloadLen, LibIPCMaxPayload)
	}
	return binary.BigEndian.AppendUint32(dst, uint32(payloadLen)), nil
}

// CType is the type byte of an old-LibIPC frame.
type CType uint8

// The old LibIPC message types; any other value is rejected.
const (
	CServerClose   CType = 0
	CError         CType = 1
	CData          CType = 2
	CNetworkLookup CType = 3
)

// String names the type as the C library does.
func (t CType) String() string {
	switch t {
	case CServerClose:
		return "SERVER_CLOSE"
	case CError:
		return "ERR"
	case CData:
		return "DATA"
	case CNetworkLookup:
		return "NETWORK_LOOKUP"
	}
	return "CType(" + strconv.Itoa(int(t)) + ")"
}

// CFrame is one decoded old-LibIPC frame.
type CFrame struct {
	Type     CType
	UserType uint8 // free for the application
	// Payload aliases the decoded buffer (see DecodeLibIPCC).
	Payload []byte
}

// DecodeLibIPCC decodes the old LibIPC C frame (type, 4-byte big-endian
// length, user type, payload) at the start of b.
//
// An unknown type is rejected as soon as the type byte is present
// (ErrUnknownType), and a length over LibIPCCMaxPayload as soon as the
// length is (ErrTooLong), both as *LibIPCError with Offset 0. With fewer
// bytes than the frame needs it returns n == 0 and a nil error without
// allocating. Otherwise the payload is b[6:n], aliasing b with capacity
// limited to its length, valid as long as b's bytes are. Safe for concurrent
// use.
func DecodeLibIPCC(b []byte) (CFrame, int, error) {
	if len(b) == 0 {
		return CFrame{}, 0, nil
	}
	if b[0] > byte(CNetworkLookup) {
		return CFrame{}, 0, &LibIPCError{Err: ErrUnknownType, Type: int(b[0]), Length: -1}
	}
	if len(b) < 5 {
		return CFrame{}, 0, nil
	}
	l := binary.BigEndian.Uint32(b[1:5])
	if l > LibIPCCMaxPayload {
		return CFrame{}, 0, &LibIPCError{Err: ErrTooLong, Type: int(b[0]), Length: int64(l)}
	}
	end := LibIPCCHeaderSize + int(l)
	if len(b) < end {
		return CFrame{}, 0, nil
	}
	return CFrame{Type: CType(b[0]), UserType: b[5], Payload: b[LibIPCCHeaderSize:end:end]}, end, nil
}

// AppendLibIPCC appends f as one old-LibIPC frame. An unknown type
// (ErrUnknownType) or a payload over LibIPCCMaxSend (ErrTooLong), which a
// C peer could not hold, is refused and dst returned unchanged.
func AppendLibIPCC(dst []byte, f CFrame) ([]byte, error) {
	dst, err := AppendLibIPCCHeader(dst, f.Type, f.UserType, len(f.Payload))
	if err != nil {
		return dst, err
	}
	return append(dst, f.Payload...), nil
}

// AppendLibIPCCHeader appends only the 6-byte header of an old-LibIPC frame
// carrying payloadLen bytes, for writev.
func AppendLibIPCCHeader(dst []byte, t CType, userType uint8, payloadLen int) ([]byte, error) {
	if t > CNetworkLookup {
		return dst, fmt.Errorf("%w: %d", ErrUnknownType, t)
	}
	if payloadLen < 0 || payloadLen > LibIPCCMaxSend {
		return dst, fmt.Errorf("%w: LibIPC C payload of %d bytes, at most %d allowed", ErrTooLong, payloadLen, LibIPCCMaxSend)
	}
	dst = append(dst, byte(t))
	dst = binary.BigEndian.AppendUint32(dst, uint32(payloadLen))
	return append(dst, userType), nil
}
