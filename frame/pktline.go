package frame

import "strconv"

// pkt-line limits, named as in git.
const (
	// HeaderSize is the length of every pkt-line header: four hex digits.
	HeaderSize = 4
	// MaxPacketSize is git's LARGE_PACKET_MAX: the largest whole packet,
	// header included (header fff0). Larger headers are rejected.
	MaxPacketSize = 65520
	// MaxPayloadSize is git's LARGE_PACKET_DATA_MAX: the largest payload of
	// one packet. Writers split longer messages at this size.
	MaxPayloadSize = MaxPacketSize - HeaderSize
	// DefaultMaxMessageSize is the assembler's default total-size cap. git
	// has none (its daemon holds any request whole); 16 MiB is far above
	// any simple-ipc message git sends and bounds memory per connection.
	DefaultMaxMessageSize = 16 << 20
)

// Header values of the control packets.
const (
	flushValue       = 0 // 0000
	delimValue       = 1 // 0001
	responseEndValue = 2 // 0002
	badValue         = 3 // 0003: no packet can be 3 bytes long
)

// Kind is what Decode found at the start of a buffer.
type Kind uint8

// Kinds of packets. NeedMore is not a packet: it says the buffer does not yet
// hold a whole packet.
const (
	NeedMore    Kind = iota // not enough bytes buffered; nothing consumed
	Data                    // data packet, 0004 through fff0; 0004 has an empty payload
	Flush                   // 0000
	Delim                   // 0001
	ResponseEnd             // 0002
)

// String returns the packet kind's name as git's documentation spells it.
func (k Kind) String() string {
	switch k {
	case NeedMore:
		return "need-more"
	case Data:
		return "data"
	case Flush:
		return "flush"
	case Delim:
		return "delim"
	case ResponseEnd:
		return "response-end"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// hexVal maps a header byte to its value, or to -1 when the byte is not one
// of 0-9, a-f, A-F. A table rather than a number parser: strconv and fmt
// accept signs, spaces and 0x prefixes that git rejects.
var hexVal = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = int8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = int8(c - 'a' + 10)
		t[c-'a'+'A'] = int8(c - 'a' + 10)
	}
	return t
}()

// headerValue parses the 4-byte header at the start of b (len(b) >= 4). It
// returns -1 if any byte is not hex: -1 shifted left stays negative, so one
// sign test covers all four bytes.
func headerValue(b []byte) int {
	_ = b[3]
	return int(hexVal[b[0]])<<12 | int(hexVal[b[1]])<<8 | int(hexVal[b[2]])<<4 | int(hexVal[b[3]])
}

// Decode decodes the packet at the start of b.
//
// With fewer bytes than the packet needs it returns NeedMore with n == 0 and
// a nil error, without allocating; the caller reads more and calls again with
// the same bytes at the front. A header is judged as soon as its 4 bytes are
// present: a non-hex byte, 0003, or a value above 65520 is an error even when
// no payload has arrived.
//
// For Data, payload is b[4:n] (empty for 0004): it aliases b, with its
// capacity limited to its length, and is valid as long as b's bytes are. For
// Flush, Delim and ResponseEnd, payload is nil and n is 4. Bytes after the
// packet are not examined.
//
// Errors are *Error values with Offset 0 (the start of b); on error kind is
// NeedMore and n is 0, so check err first. Errors are fatal to the stream.
// Decode is safe for concurrent use.
func Decode(b []byte) (kind Kind, payload []byte, n int, err error) {
	if len(b) >= HeaderSize {
		kind, payload, n, err = decodeHeader(b)
	}
	return
}

// decodeHeader is Decode for len(b) >= HeaderSize, kept out of line so that
// Decode's short-buffer answer inlines into callers.
func decodeHeader(b []byte) (Kind, []byte, int, error) {
	v := headerValue(b)
	switch {
	case v >= HeaderSize:
		if v > MaxPacketSize {
			return NeedMore, nil, 0, newError(ErrTooLong, 0, b[:HeaderSize], v)
		}
		if len(b) < v {
			return NeedMore, nil, 0, nil
		}
		return Data, b[HeaderSize:v:v], v, nil
	case v == badValue:
		return NeedMore, nil, 0, newError(ErrBadLength, 0, b[:HeaderSize], v)
	case v >= 0:
		// 0000, 0001, 0002 map to Flush, Delim, ResponseEnd in order.
		return Flush + Kind(v), nil, HeaderSize, nil
	}
	return NeedMore, nil, 0, newError(ErrBadHeader, 0, b[:HeaderSize], -1)
}
