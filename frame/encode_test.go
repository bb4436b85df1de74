package frame

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// encodeRows are golden encoder cases E1–E8, cut the way git cuts a message
// (packets of at most 65516 payload bytes, then 0000): the message, the
// expected packet headers in order (each followed by its payload), and the
// total size.
var encodeRows = []struct {
	id      string
	n       int
	headers []string
	total   int
}{
	{"E1", 0, []string{"0000"}, 4},
	{"E2", 4, []string{"0008", "0000"}, 12},
	{"E3", 10, []string{"000e", "0000"}, 18},
	{"E4", 65516, []string{"fff0", "0000"}, 65524},
	{"E5", 65517, []string{"fff0", "0005", "0000"}, 65529},
	{"E6", 100000, []string{"fff0", "86b8", "0000"}, 100012},
	{"E7", 131032, []string{"fff0", "fff0", "0000"}, 131044},
	{"E8", 1 << 20, append(slicesRepeat("fff0", 16), "0144", "0000"), 1048648},
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// patterned returns n bytes that differ from packet to packet, so that a
// reordering or misplaced chunk boundary shows.
func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>16)
	}
	return b
}

func TestEncodeGolden(t *testing.T) {
	for _, row := range encodeRows {
		t.Run(row.id, func(t *testing.T) {
			msg := patterned(row.n)
			if row.id == "E2" {
				msg = []byte("ping")
			}
			out := AppendMessage([]byte("prefix"), msg)
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatalf("dst prefix lost")
			}
			out = out[len("prefix"):]
			if len(out) != row.total || EncodedLen(row.n) != row.total {
				t.Fatalf("encoded %d bytes, EncodedLen %d, want %d", len(out), EncodedLen(row.n), row.total)
			}
			if row.id == "E2" && string(out) != "0008ping0000" {
				t.Fatalf("E2 = %q", out)
			}
			// Walk the headers; payloads must be the message in order.
			var rebuilt []byte
			p := out
			for i, h := range row.headers {
				if string(p[:4]) != h {
					t.Fatalf("packet %d header %q, want %q", i, p[:4], h)
				}
				kind, payload, n, err := Decode(p)
				if err != nil || (h == "0000") != (kind == Flush) {
					t.Fatalf("packet %d: %v %v", i, kind, err)
				}
				rebuilt = append(rebuilt, payload...)
				p = p[n:]
			}
			if len(p) != 0 || !bytes.Equal(rebuilt, msg) {
				t.Fatalf("payloads do not rebuild the message (%d bytes left)", len(p))
			}
			// Back through the assembler, in both modes.
			for _, mode := range []Mode{SimpleIPC, Persistent} {
				got, n, done, err := NewAssembler(mode, 0).Next(out)
				if err != nil || !done || n != len(out) || !bytes.Equal(got, msg) {
					t.Fatalf("%v: round trip failed: %d %v %v", mode, n, done, err)
				}
			}
			// AppendData is the same packets without the flush.
			if d := AppendData(nil, msg); !bytes.Equal(d, out[:len(out)-4]) {
				t.Fatalf("AppendData differs from AppendMessage less the flush")
			}
		})
	}
}

// ceil(N/65516) data packets plus a flush, for every length around the
// packet boundaries, and never a 0004 or an uppercase digit.
func TestEncodePacketCount(t *testing.T) {
	for _, n := range []int{0, 1, 2, 65515, 65516, 65517, 2*65516 - 1, 2 * 65516, 2*65516 + 1, 5*65516 + 3} {
		out := AppendMessage(nil, patterned(n))
		packets := 0
		for p := out; ; {
			if h := string(p[:4]); h == "0004" || strings.ToLower(h) != h {
				t.Fatalf("n=%d: header %q", n, h)
			}
			kind, _, m, err := Decode(p)
			if err != nil {
				t.Fatal(err)
			}
			p = p[m:]
			if kind == Flush {
				if len(p) != 0 {
					t.Fatalf("n=%d: bytes after the flush", n)
				}
				break
			}
			packets++
		}
		if want := (n + MaxPayloadSize - 1) / MaxPayloadSize; packets != want || len(out) != EncodedLen(n) {
			t.Fatalf("n=%d: %d packets, %d bytes; want %d packets, %d bytes", n, packets, len(out), want, EncodedLen(n))
		}
	}
	if EncodedLen(-5) != 4 {
		t.Fatalf("EncodedLen(-5) = %d", EncodedLen(-5))
	}
	if d := AppendData([]byte("x"), nil); string(d) != "x" {
		t.Fatalf("AppendData of nothing appended %q", d)
	}
}

func TestAppendPacketAndHeader(t *testing.T) {
	out, err := AppendPacket([]byte("x"), []byte("ping"))
	if err != nil || string(out) != "x0008ping" {
		t.Fatalf("AppendPacket = %q %v", out, err)
	}
	if out, err = AppendPacket(nil, nil); err != nil || string(out) != "0004" {
		t.Fatalf("empty AppendPacket = %q %v", out, err)
	}
	if out, err = AppendPacket(nil, make([]byte, MaxPayloadSize)); err != nil || string(out[:4]) != "fff0" || len(out) != MaxPacketSize {
		t.Fatalf("largest AppendPacket = %q %v", out[:4], err)
	}
	if out, err = AppendPacket([]byte("x"), make([]byte, MaxPayloadSize+1)); !errors.Is(err, ErrTooLong) || string(out) != "x" {
		t.Fatalf("oversize AppendPacket = %q %v", out, err)
	}
	for n, want := range map[int]string{0: "0004", 1: "0005", 10: "000e", 0xab: "00af", MaxPayloadSize: "fff0"} {
		if out, err := AppendHeader(nil, n); err != nil || string(out) != want {
			t.Errorf("AppendHeader(%d) = %q %v, want %q", n, out, err, want)
		}
	}
	if out, err := AppendHeader([]byte("x"), MaxPayloadSize+1); !errors.Is(err, ErrTooLong) || string(out) != "x" {
		t.Errorf("AppendHeader(65517) = %q %v", out, err)
	}
	if out, err := AppendHeader([]byte("x"), -1); !errors.Is(err, ErrBadLength) || string(out) != "x" {
		t.Errorf("AppendHeader(-1) = %q %v", out, err)
	}
	if s := string(AppendFlush(AppendDelim(AppendResponseEnd(nil)))); s != "000200010000" {
		t.Errorf("control packets = %q", s)
	}
}
