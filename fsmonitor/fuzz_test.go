package fsmonitor

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"builtin:0.1.20261123T083313.557826Z:7", "builtin:fake", "builtin::", "builtin:a:b:9", "quit", "1795422795148292482", "builtin:x:0\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		token, seq, ok := parseQuery(req)
		if !ok {
			if token != "" || seq != 0 {
				t.Fatalf("rejected %q but returned %q, %d", req, token, seq)
			}
			return
		}
		// What parses re-encodes to the request (a header without its NUL).
		h := appendHeader(nil, token, seq)
		if again := h[:len(h)-1]; !bytes.Equal(again, req) {
			// Leading zeros or a '+' in the number are the only freedom.
			t2, s2, ok2 := parseQuery(again)
			if !ok2 || t2 != token || s2 != seq {
				t.Fatalf("%q parsed to %q, %d, which re-encodes to %q", req, token, seq, again)
			}
		}
	})
}

func event(wd int32, mask uint32, name string, pad int) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(wd))
	b = binary.NativeEndian.AppendUint32(b, mask)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint32(b, uint32(len(name)+pad))
	b = append(b, name...)
	return append(b, make([]byte, pad)...)
}

func FuzzNextEvent(f *testing.F) {
	f.Add(event(1, 0x100, "a.txt", 11))
	f.Add(append(event(1, 0x100, "dir", 13), event(-1, 0x4000, "", 0)...))
	f.Add(event(7, 0x40000100, "", 0)[:10])
	f.Add(binary.NativeEndian.AppendUint32(make([]byte, 12), 1<<31))
	f.Fuzz(func(t *testing.T, b []byte) {
		for rest := b; ; {
			ev, next, ok := nextEvent(rest)
			if !ok {
				if len(next) != len(rest) {
					t.Fatal("a refused event consumed bytes")
				}
				return
			}
			if len(next) > len(rest)-inotifyHeader {
				t.Fatalf("an event of less than a header: %d -> %d bytes", len(rest), len(next))
			}
			if bytes.IndexByte(ev.name, 0) >= 0 || cap(ev.name) != len(ev.name) {
				t.Fatalf("name %q (cap %d) not cut at its NUL", ev.name, cap(ev.name))
			}
			if len(ev.name) > 0 && &ev.name[0] != &rest[inotifyHeader] {
				t.Fatal("name does not alias the buffer")
			}
			rest = next
		}
	})
}

func TestNextEvent(t *testing.T) {
	b := append(event(3, 0x100, "new.txt", 9), event(-1, 0x4000, "", 0)...)
	ev, rest, ok := nextEvent(b)
	if !ok || ev.wd != 3 || ev.mask != 0x100 || string(ev.name) != "new.txt" {
		t.Fatalf("first event %+v %v", ev, ok)
	}
	ev, rest, ok = nextEvent(rest)
	if !ok || ev.wd != -1 || ev.mask != 0x4000 || len(ev.name) != 0 || len(rest) != 0 {
		t.Fatalf("second event %+v %v, %d bytes left", ev, ok, len(rest))
	}
	if _, _, ok := nextEvent(b[:20]); ok {
		t.Fatal("a cut event decoded")
	}
}
