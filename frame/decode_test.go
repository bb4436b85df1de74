package frame

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// decodeRows are golden decoder cases (P1–P26): the bytes, and what Decode
// makes of them with nothing more buffered, by git's header rules.
var decodeRows = []struct {
	id      string
	in      string
	kind    Kind
	payload string
	n       int
	err     error
	length  int // declared length carried by the error
}{
	{"P1", "0000", Flush, "", 4, nil, 0},
	{"P2", "0001", Delim, "", 4, nil, 0},
	{"P3", "0002", ResponseEnd, "", 4, nil, 0},
	{"P4", "0003", NeedMore, "", 0, ErrBadLength, 3},
	{"P5", "0004", Data, "", 4, nil, 0},
	{"P6", "0005a", Data, "a", 5, nil, 0},
	{"P7", "0008ping", Data, "ping", 8, nil, 0},
	{"P8", "000aping12", Data, "ping12", 10, nil, 0},
	{"P9", "000Aping12", Data, "ping12", 10, nil, 0},
	{"P10", "0009ping\n", Data, "ping\n", 9, nil, 0},
	{"P11", "0008ERR ", Data, "ERR ", 8, nil, 0},
	{"P12", "fff0" + rep('a', 65516), Data, rep('a', 65516), 65520, nil, 0},
	{"P13", "FFF0" + rep('a', 65516), Data, rep('a', 65516), 65520, nil, 0},
	{"P14", "fff1", NeedMore, "", 0, ErrTooLong, 65521},
	{"P15", "ffff", NeedMore, "", 0, ErrTooLong, 65535},
	{"P16", "zzzz", NeedMore, "", 0, ErrBadHeader, -1},
	{"P17", " 008ping", NeedMore, "", 0, ErrBadHeader, -1},
	{"P18a", "-008ping", NeedMore, "", 0, ErrBadHeader, -1},
	{"P18b", "+008ping", NeedMore, "", 0, ErrBadHeader, -1},
	{"P19", "0x08ping", NeedMore, "", 0, ErrBadHeader, -1},
	{"P20", "\x00\x00\x00\x08", NeedMore, "", 0, ErrBadHeader, -1},
	{"P21", "g000", NeedMore, "", 0, ErrBadHeader, -1},
	{"P22", "", NeedMore, "", 0, nil, 0},
	{"P23", "000", NeedMore, "", 0, nil, 0},
	{"P24", "0008pi", NeedMore, "", 0, nil, 0},
	{"P25", "00000008ping", Flush, "", 4, nil, 0},
	{"P26", "0006\n\n", Data, "\n\n", 6, nil, 0},
}

func TestDecodeGolden(t *testing.T) {
	for _, row := range decodeRows {
		for _, in := range headerCases(row.in) {
			t.Run(row.id+"/"+strings.ToValidUTF8(in[:min(len(in), 8)], "?"), func(t *testing.T) {
				b := []byte(in)
				kind, payload, n, err := Decode(b)
				if row.err != nil {
					var e *Error
					if !errors.As(err, &e) || !errors.Is(err, row.err) {
						t.Fatalf("err = %v, want *Error wrapping %v", err, row.err)
					}
					if e.Offset != 0 || string(e.Header[:]) != in[:4] || e.Length != row.length {
						t.Fatalf("error fields = offset %d header %q length %d, want 0 %q %d",
							e.Offset, e.Header, e.Length, in[:4], row.length)
					}
					if n != 0 || payload != nil {
						t.Fatalf("error came with n=%d payload=%q", n, payload)
					}
					return
				}
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if kind != row.kind || n != row.n || string(payload) != row.payload {
					t.Fatalf("Decode = %v %q %d, want %v %q %d", kind, payload, n, row.kind, row.payload, row.n)
				}
				if kind == Data {
					if payload == nil {
						t.Fatalf("data packet with a nil payload")
					}
					if !within(payload, b[:n]) || cap(payload) != len(payload) {
						t.Fatalf("payload is not a capacity-limited subslice of the input")
					}
				} else if payload != nil {
					t.Fatalf("%v packet with payload %q", kind, payload)
				}
			})
		}
	}
}

// Every header from 0000 to ffff, in both cases, against git's header rules:
// 0000–0002 are control packets, 0003 is invalid, 0004–fff0 are data packets
// of header-4 payload bytes, fff1–ffff are too long.
func TestDecodeAllHeaders(t *testing.T) {
	buf := make([]byte, HeaderSize+MaxPayloadSize)
	for v := range 1 << 16 {
		for _, h := range []string{lowerHex4(v), strings.ToUpper(lowerHex4(v))} {
			copy(buf, h)
			kind, payload, n, err := Decode(buf)
			switch {
			case v <= 2:
				if err != nil || kind != Flush+Kind(v) || n != 4 {
					t.Fatalf("%s: %v %d %v", h, kind, n, err)
				}
			case v == 3:
				if !errors.Is(err, ErrBadLength) {
					t.Fatalf("%s: %v", h, err)
				}
			case v <= MaxPacketSize:
				if err != nil || kind != Data || n != v || len(payload) != v-4 {
					t.Fatalf("%s: %v %d %d %v", h, kind, n, len(payload), err)
				}
				// One byte short of the packet: need more.
				if k, _, n, err := Decode(buf[:v-1]); v > 4 && (k != NeedMore || n != 0 || err != nil) {
					t.Fatalf("%s short: %v %d %v", h, k, n, err)
				}
			default:
				if !errors.Is(err, ErrTooLong) {
					t.Fatalf("%s: %v", h, err)
				}
			}
		}
	}
}

func lowerHex4(v int) string {
	const d = "0123456789abcdef"
	return string([]byte{d[v>>12&15], d[v>>8&15], d[v>>4&15], d[v&15]})
}

// Every byte that is not a hex digit, in every header position, is a bad
// header, as in git: spaces, signs, x, NUL, bytes >= 0x80.
func TestDecodeNonHexEveryPosition(t *testing.T) {
	for c := range 256 {
		if strings.IndexByte("0123456789abcdefABCDEF", byte(c)) >= 0 {
			continue
		}
		for pos := range HeaderSize {
			h := []byte("0008")
			h[pos] = byte(c)
			_, _, n, err := Decode(append(h, "ping"...))
			var e *Error
			if !errors.As(err, &e) || e.Err != ErrBadHeader || e.Length != -1 || n != 0 || e.Header != [4]byte(h) {
				t.Fatalf("byte %#x at %d: n=%d err=%v", c, pos, n, err)
			}
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		NeedMore: "need-more", Data: "data", Flush: "flush", Delim: "delim",
		ResponseEnd: "response-end", 9: "Kind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
	if SimpleIPC.String() != "simple-ipc" || Persistent.String() != "persistent" || Mode(7).String() != "Mode(7)" {
		t.Errorf("Mode strings: %v %v %v", SimpleIPC, Persistent, Mode(7))
	}
}

func TestErrorString(t *testing.T) {
	for _, c := range []struct {
		e    *Error
		want string
	}{
		{&Error{Err: ErrBadHeader, Offset: 8, Header: [4]byte{'z', 0, 'z', 0xff}, Length: -1},
			`frame: non-hex byte in packet header at offset 8 (header "z\x00z\xff")`},
		{&Error{Err: ErrTooLong, Offset: 0, Header: [4]byte{'f', 'f', 'f', '1'}, Length: 65521},
			`frame: declared length too long at offset 0 (header "fff1", length 65521)`},
		{&Error{Err: io.ErrUnexpectedEOF, Offset: 12, Length: -1},
			`frame: truncated stream at offset 12: unexpected EOF`},
		{&Error{Err: io.ErrUnexpectedEOF, Offset: 4, Header: [4]byte{'0', '0', '0', '8'}, Length: 8},
			`frame: truncated packet at offset 4 (header "0008", length 8): unexpected EOF`},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
	}
	le := &LibIPCError{Err: ErrUnknownType, Type: 5, Length: -1}
	if got := le.Error(); got != "frame: unknown LibIPC message type at offset 0 (type 5, payload length -1)" || !errors.Is(le, ErrUnknownType) {
		t.Errorf("LibIPCError = %q", got)
	}
	le = &LibIPCError{Err: ErrTooLong, Type: -1, Length: 99993}
	if got := le.Error(); got != "frame: declared length too long at offset 0 (payload length 99993)" {
		t.Errorf("LibIPCError = %q", got)
	}
}
