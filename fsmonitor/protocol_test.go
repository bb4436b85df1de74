package fsmonitor

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pktipc/pktipc/frame"
)

func TestParseQuery(t *testing.T) {
	for _, c := range []struct {
		req   string
		token string
		seq   uint64
		ok    bool
	}{
		{"builtin:0.28566.20261123T083313.557826Z:0", "0.28566.20261123T083313.557826Z", 0, true},
		{"builtin:1.2.3Z:4711", "1.2.3Z", 4711, true},
		{"builtin:fake", "", 0, false},
		{"builtin::5", "", 0, false},
		{"builtin:tok:", "", 0, false},
		{"builtin:tok:-1", "", 0, false},
		{"builtin:tok:18446744073709551616", "", 0, false},
		{"1795422795148292482", "", 0, false},
		{"", "", 0, false},
	} {
		token, seq, ok := parseQuery([]byte(c.req))
		if token != c.token || seq != c.seq || ok != c.ok {
			t.Errorf("parseQuery(%q) = %q, %d, %v; want %q, %d, %v", c.req, token, seq, ok, c.token, c.seq, c.ok)
		}
	}
}

// packets runs writeReply and frames what it writes as the engine does:
// a packet per write, then a flush.
func packets(t *testing.T, a answer) []byte {
	t.Helper()
	var wire []byte
	err := writeReply(a, make([]byte, 0, 64), func(p []byte) error {
		if len(p) == 0 || len(p) > 65516 {
			t.Fatalf("a write of %d bytes", len(p))
		}
		var err error
		wire, err = frame.AppendPacket(wire, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return frame.AppendFlush(wire)
}

// TestReplyBytes checks the reply against the bytes git's daemon sent in
// a real exchange, and the trivial reply's.
func TestReplyBytes(t *testing.T) {
	tok := "0.28566.20261123T083313.557826Z"
	got := packets(t, answer{token: tok, seq: 1, paths: []string{"c.txt", "a.txt"}})
	want := "002ebuiltin:0.28566.20261123T083313.557826Z:1\x00" + "0010c.txt\x00a.txt\x00" + "0000"
	if string(got) != want {
		t.Fatalf("reply\n got %q\nwant %q", got, want)
	}
	// A directory is followed by a path inside it, for git's untracked
	// cache.
	got = packets(t, answer{token: tok, seq: 2, paths: []string{"d/", "d/x"}})
	want = "002ebuiltin:0.28566.20261123T083313.557826Z:2\x00" + "0024d/\x00d/" + coneMarker + "\x00d/x\x00" + "0000"
	if string(got) != want {
		t.Fatalf("reply with a directory\n got %q\nwant %q", got, want)
	}
	got = packets(t, answer{token: tok, seq: 0, trivial: true})
	want = "002ebuiltin:0.28566.20261123T083313.557826Z:0\x00" + "0006/\x00" + "0000"
	if string(got) != want {
		t.Fatalf("trivial reply\n got %q\nwant %q", got, want)
	}
}

func TestReplyBatches(t *testing.T) {
	var paths []string
	for i := range 5000 {
		paths = append(paths, strings.Repeat("d", 40)+"/"+strings.Repeat("f", i%50)+"x")
	}
	var writes [][]byte
	err := writeReply(answer{token: "t", seq: 3, paths: paths}, nil, func(p []byte) error {
		writes = append(writes, bytes.Clone(p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(writes) < 3 {
		t.Fatalf("%d writes for %d paths: want the paths split below git's packet limit", len(writes), len(paths))
	}
	var back []string
	for _, w := range writes[1:] {
		if len(w) > maxReplyWrite || w[len(w)-1] != 0 {
			t.Fatalf("a write of %d bytes, last byte %q", len(w), w[len(w)-1])
		}
		back = append(back, strings.Split(string(w[:len(w)-1]), "\x00")...)
	}
	if strings.Join(back, "\n") != strings.Join(paths, "\n") {
		t.Fatal("the paths written are not the paths given, in order")
	}
}
