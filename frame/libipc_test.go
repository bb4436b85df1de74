package frame

import (
	"bytes"
	"errors"
	"testing"
)

// hexb writes bytes compactly: a string of bytes.
func hexb(b ...byte) string { return string(b) }

// zigRows are golden cases Z1–Z12 for the current (Zig) LibIPC format. Each
// row lists the frames expected when decoding in sequence. (Z13, ipcd's
// answer to a client, is an unframed sendmsg of "ok" and a descriptor, not a
// codec case.)
var zigRows = []struct {
	id       string
	in       string
	payloads []string // decoded in order; the rest must then need more
	errLen   int64    // declared length of a rejected header, or 0
}{
	{"Z1", hexb(0, 0, 0, 5) + "hello", []string{"hello"}, 0},
	{"Z2", hexb(0, 0, 0, 4) + "ping", []string{"ping"}, 0},
	{"Z3", hexb(0, 0, 0, 0), []string{""}, 0},
	{"Z4", hexb(0, 1, 0x86, 0x98) + rep('q', 99992), []string{rep('q', 99992)}, 0},
	{"Z5", hexb(0, 1, 0x86, 0x99), nil, 99993},
	{"Z6", hexb(0xff, 0xff, 0xff, 0xff), nil, 0xffffffff},
	{"Z7", hexb(0, 0, 0, 1, 'A', 0, 0, 0, 1, 'B'), []string{"A", "B"}, 0},
	{"Z8", hexb(0, 0, 0, 5, 'h'), nil, 0}, // need more; completed in TestLibIPCSplit
	{"Z9", hexb(0, 0, 0), nil, 0},
	{"Z10", hexb(0, 0, 0, 0x25) + "pong;pong tls://pong.example.com/pong", []string{"pong;pong tls://pong.example.com/pong"}, 0},
	{"Z11", hexb(0, 0, 0, 0x19) + "tcp://127.0.0.1:9000/pong", []string{"tcp://127.0.0.1:9000/pong"}, 0},
	{"Z12", hexb(0, 0, 0, 2, 0x6f, 0x6b), []string{"ok"}, 0},
}

func TestLibIPCGolden(t *testing.T) {
	for _, row := range zigRows {
		t.Run(row.id, func(t *testing.T) {
			b := []byte(row.in)
			p := b
			for i, want := range row.payloads {
				payload, n, err := DecodeLibIPC(p, 0)
				if err != nil || string(payload) != want || n != 4+len(want) {
					t.Fatalf("frame %d = %.20q %d %v, want %.20q", i, payload, n, err, want)
				}
				if payload == nil || !within(payload, p[:n]) || cap(payload) != len(payload) {
					t.Fatalf("payload is not a capacity-limited subslice of the input")
				}
				// The encoder writes the same bytes back.
				enc, err := AppendLibIPC(nil, payload)
				if err != nil || !bytes.Equal(enc, p[:n]) {
					t.Fatalf("AppendLibIPC = %x %v", enc[:min(len(enc), 8)], err)
				}
				p = p[n:]
			}
			payload, n, err := DecodeLibIPC(p, 0)
			if row.errLen != 0 {
				var e *LibIPCError
				if !errors.As(err, &e) || e.Err != ErrTooLong || e.Length != row.errLen || e.Type != -1 || n != 0 {
					t.Fatalf("err = %v, want too long (%d)", err, row.errLen)
				}
				return
			}
			if payload != nil || n != 0 || err != nil {
				t.Fatalf("after the frames: %q %d %v, want need more", payload, n, err)
			}
		})
	}
}

// Z8: a frame split across reads needs more, then decodes; every split point.
func TestLibIPCSplit(t *testing.T) {
	full := []byte(hexb(0, 0, 0, 5) + "hello")
	for i := range len(full) {
		if p, n, err := DecodeLibIPC(full[:i], 0); p != nil || n != 0 || err != nil {
			t.Fatalf("prefix %d: %q %d %v", i, p, n, err)
		}
	}
	if p, n, err := DecodeLibIPC(full, 0); string(p) != "hello" || n != 9 || err != nil {
		t.Fatalf("whole: %q %d %v", p, n, err)
	}
	// A custom cap, lower and higher than LibIPC's.
	if _, _, err := DecodeLibIPC(full, 4); !errors.Is(err, ErrTooLong) {
		t.Fatalf("cap 4: %v", err)
	}
	big := append([]byte{0, 1, 0x86, 0x99}, make([]byte, 99993)...)
	if p, n, err := DecodeLibIPC(big, 200000); len(p) != 99993 || n != len(big) || err != nil {
		t.Fatalf("cap 200000: %d %d %v", len(p), n, err)
	}
}

func TestLibIPCEncodeLimits(t *testing.T) {
	if out, err := AppendLibIPC([]byte("x"), make([]byte, LibIPCMaxPayload+1)); !errors.Is(err, ErrTooLong) || string(out) != "x" {
		t.Errorf("oversize: %q %v", out, err)
	}
	if out, err := AppendLibIPCHeader(nil, -1); !errors.Is(err, ErrTooLong) || out != nil {
		t.Errorf("negative: %q %v", out, err)
	}
	if out, err := AppendLibIPC(nil, nil); err != nil || string(out) != hexb(0, 0, 0, 0) {
		t.Errorf("empty: %q %v", out, err)
	}
	if out, err := AppendLibIPCCompat([]byte("x"), nil); err != ErrEmptyFrame || string(out) != "x" {
		t.Errorf("compat empty: %q %v", out, err)
	}
	if out, err := AppendLibIPCCompat(nil, []byte("ok")); err != nil || string(out) != hexb(0, 0, 0, 2)+"ok" {
		t.Errorf("compat: %q %v", out, err)
	}
}

// cRows are golden cases C1–C9 for the old (C) LibIPC format. (C10,
// ipc_provide_fd's one byte plus a descriptor, is not a framed message.)
var cRows = []struct {
	id     string
	in     string
	frames []CFrame
	err    error // after the frames
	typ    int
	length int64
}{
	{id: "C1", in: hexb(2, 0, 0, 0, 5, 0) + "hello", frames: []CFrame{{CData, 0, []byte("hello")}}},
	{id: "C2", in: hexb(2, 0, 0, 0, 0x10, 0x2a) + "0123456789abcdef", frames: []CFrame{{CData, 42, []byte("0123456789abcdef")}}},
	{id: "C3", in: hexb(2, 0, 0, 0, 0, 1), frames: []CFrame{{CData, 1, []byte{}}}},
	{id: "C4", in: hexb(0, 0, 0, 0, 0, 0), frames: []CFrame{{CServerClose, 0, []byte{}}}},
	{id: "C5", in: hexb(1, 0, 0, 0, 3, 0) + "bad", frames: []CFrame{{CError, 0, []byte("bad")}}},
	{id: "C6", in: hexb(2, 0, 0x1e, 0x84, 0x7a, 0) + rep('c', 1999994), frames: []CFrame{{CData, 0, []byte(rep('c', 1999994))}}},
	{id: "C7", in: hexb(2, 0, 0x1e, 0x84, 0x7b, 0), err: ErrTooLong, typ: 2, length: 1999995},
	{id: "C8", in: hexb(5, 0, 0, 0, 0, 0), err: ErrUnknownType, typ: 5, length: -1},
	{id: "C9", in: hexb(2, 0, 0, 0, 1, 0, 'A', 2, 0, 0, 0, 1, 0, 'B'), frames: []CFrame{{CData, 0, []byte("A")}, {CData, 0, []byte("B")}}},
}

func TestLibIPCCGolden(t *testing.T) {
	for _, row := range cRows {
		t.Run(row.id, func(t *testing.T) {
			p := []byte(row.in)
			for i, want := range row.frames {
				f, n, err := DecodeLibIPCC(p)
				if err != nil || f.Type != want.Type || f.UserType != want.UserType || !bytes.Equal(f.Payload, want.Payload) || n != 6+len(want.Payload) {
					t.Fatalf("frame %d = %v %d %.20q %d %v", i, f.Type, f.UserType, f.Payload, n, err)
				}
				if f.Payload == nil || !within(f.Payload, p[:n]) || cap(f.Payload) != len(f.Payload) {
					t.Fatalf("payload is not a capacity-limited subslice of the input")
				}
				enc, err := AppendLibIPCC(nil, f)
				if len(f.Payload) > LibIPCCMaxSend {
					// Decoded, but more than a C peer can hold: never sent.
					if !errors.Is(err, ErrTooLong) {
						t.Fatalf("AppendLibIPCC of %d bytes: %v, want ErrTooLong", len(f.Payload), err)
					}
				} else if err != nil || !bytes.Equal(enc, p[:n]) {
					t.Fatalf("AppendLibIPCC = %x %v", enc[:min(len(enc), 8)], err)
				}
				// Every proper prefix needs more (or, for the unknown type,
				// fails as soon as the type byte is there).
				for j := range min(n, 64) {
					if _, m, err := DecodeLibIPCC(p[:j]); m != 0 || err != nil {
						t.Fatalf("prefix %d: %d %v", j, m, err)
					}
				}
				p = p[n:]
			}
			f, n, err := DecodeLibIPCC(p)
			if row.err == nil {
				if n != 0 || err != nil || f.Payload != nil {
					t.Fatalf("after the frames: %d %v", n, err)
				}
				return
			}
			var e *LibIPCError
			if !errors.As(err, &e) || e.Err != row.err || e.Type != row.typ || e.Length != row.length || n != 0 {
				t.Fatalf("err = %v, want %v (type %d, length %d)", err, row.err, row.typ, row.length)
			}
		})
	}
	// Rejected as early as possible: type at 1 byte, length at 5.
	if _, _, err := DecodeLibIPCC([]byte{4}); !errors.Is(err, ErrUnknownType) {
		t.Errorf("type byte alone: %v", err)
	}
	if _, _, err := DecodeLibIPCC([]byte{2, 0xff, 0, 0, 0}); !errors.Is(err, ErrTooLong) {
		t.Errorf("length without user type: %v", err)
	}
}

func TestLibIPCCEncodeLimits(t *testing.T) {
	if out, err := AppendLibIPCC([]byte("x"), CFrame{Type: 4}); !errors.Is(err, ErrUnknownType) || string(out) != "x" {
		t.Errorf("unknown type: %q %v", out, err)
	}
	// A C peer holds at most LibIPCCMaxSend: the encoder sends no more,
	// though the decoder takes up to LibIPCCMaxPayload.
	if out, err := AppendLibIPCC(nil, CFrame{Type: CData, Payload: make([]byte, LibIPCCMaxSend)}); err != nil || len(out) != LibIPCCHeaderSize+LibIPCCMaxSend {
		t.Fatalf("AppendLibIPCC(LibIPCCMaxSend bytes) = %d bytes, %v", len(out), err)
	}
	if out, err := AppendLibIPCC(nil, CFrame{Type: CData, Payload: make([]byte, LibIPCCMaxSend+1)}); !errors.Is(err, ErrTooLong) || out != nil {
		t.Errorf("oversize: %v", err)
	}
	if out, err := AppendLibIPCCHeader(nil, CNetworkLookup, 7, 2); err != nil || string(out) != hexb(3, 0, 0, 0, 2, 7) {
		t.Errorf("header: %x %v", out, err)
	}
	for typ, s := range map[CType]string{CServerClose: "SERVER_CLOSE", CError: "ERR", CData: "DATA", CNetworkLookup: "NETWORK_LOOKUP", 9: "CType(9)"} {
		if typ.String() != s {
			t.Errorf("CType(%d).String() = %q", typ, typ.String())
		}
	}
}
