package frame

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/format/pktline"
)

// Interoperability with go-git's pkt-line codec (v5), a second independent
// implementation. It differs from git on zero-length packets other than
// 0000 (it rejects them), on ERR payloads (it turns them into errors) and on
// its upper limit (fff4, where git stops at fff0), so the table holds
// ordinary data packets and flushes only.

// gogitPayloads are non-empty payloads up to the largest, none starting with
// "ERR ".
func gogitPayloads() [][]byte {
	return [][]byte{
		[]byte("a"), []byte("ping"), []byte("ping\n"), []byte("\n\n"), []byte("\x00\x01\xff"),
		[]byte("command=ls-refs\n"), []byte("ER"), []byte("err lower\n"),
		patterned(255), patterned(4096), patterned(65515),
		bytes.Repeat([]byte{'a'}, MaxPayloadSize), patterned(MaxPayloadSize),
	}
}

// go-git encodes; we decode packet by packet, byte for byte.
func TestGoGitEncodesWeDecode(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf) // go-git writes header and payload separately
	enc := pktline.NewEncoder(bw)
	payloads := gogitPayloads()
	for _, p := range payloads {
		if err := enc.Encode(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	wire := buf.Bytes()
	// Byte for byte what our encoder writes.
	var ours []byte
	for _, p := range payloads {
		var err error
		if ours, err = AppendPacket(ours, p); err != nil {
			t.Fatal(err)
		}
	}
	ours = AppendFlush(ours)
	if !bytes.Equal(ours, wire) {
		t.Fatalf("go-git's encoding differs from ours")
	}
	b := wire
	for i, want := range payloads {
		k, p, n, err := Decode(b)
		if err != nil || k != Data || !bytes.Equal(p, want) {
			t.Fatalf("packet %d: %v %v", i, k, err)
		}
		b = b[n:]
	}
	if k, _, n, err := Decode(b); k != Flush || n != len(b) || err != nil {
		t.Fatalf("end: %v %d %v", k, n, err)
	}
	// A message that go-git split at its MaxPayloadSize reassembles.
	var msg []byte
	for _, p := range payloads {
		msg = append(msg, p...)
	}
	got, n, done, err := NewAssembler(Persistent, 0).Next(wire)
	if err != nil || !done || n != len(wire) || !bytes.Equal(got, msg) {
		t.Fatalf("assembling go-git's stream: %v %v", done, err)
	}
}

// We encode; go-git decodes: single packets, and whole messages split by
// AppendMessage (multi-packet, 65516-byte chunks).
func TestWeEncodeGoGitDecodes(t *testing.T) {
	var wire []byte
	payloads := gogitPayloads()
	for _, p := range payloads {
		var err error
		if wire, err = AppendPacket(wire, p); err != nil {
			t.Fatal(err)
		}
	}
	big := patterned(3*MaxPayloadSize + 17)
	wire = AppendFlush(wire)
	wire = AppendMessage(wire, big)
	wire = AppendMessage(wire, nil)

	s := pktline.NewScanner(bytes.NewReader(wire))
	next := func() []byte {
		t.Helper()
		if !s.Scan() {
			t.Fatalf("go-git stopped: %v", s.Err())
		}
		return s.Bytes()
	}
	for i, want := range payloads {
		if got := next(); !bytes.Equal(got, want) {
			t.Fatalf("go-git packet %d: %d bytes, want %d", i, len(got), len(want))
		}
	}
	if got := next(); len(got) != 0 { // go-git's flush is an empty Bytes()
		t.Fatalf("expected a flush, got %d bytes", len(got))
	}
	var rebuilt []byte
	for {
		p := next()
		if len(p) == 0 {
			break
		}
		if len(p) > MaxPayloadSize {
			t.Fatalf("a packet of %d bytes", len(p))
		}
		rebuilt = append(rebuilt, p...)
	}
	if !bytes.Equal(rebuilt, big) {
		t.Fatalf("go-git rebuilt %d bytes, want %d", len(rebuilt), len(big))
	}
	if got := next(); len(got) != 0 { // the empty message is a lone flush
		t.Fatalf("empty message: %d bytes", len(got))
	}
	if s.Scan() || s.Err() != nil {
		t.Fatalf("go-git did not end cleanly: %v", s.Err())
	}
}

// The documented differences, pinned so that a go-git upgrade that changes
// them shows up here: 0001..0004 are invalid to go-git, fff1..fff4 valid.
func TestGoGitDifferences(t *testing.T) {
	for _, h := range []string{"0001", "0002", "0003", "0004"} {
		s := pktline.NewScanner(bytes.NewReader([]byte(h + "0000")))
		if s.Scan() || s.Err() == nil {
			t.Errorf("go-git accepted %s", h)
		}
		if _, _, _, err := Decode([]byte(h)); (err != nil) != (h == "0003") {
			t.Errorf("Decode(%s): %v", h, err)
		}
	}
	in := append([]byte("fff1"), make([]byte, 65517)...)
	s := pktline.NewScanner(bytes.NewReader(in))
	if !s.Scan() || len(s.Bytes()) != 65517 {
		t.Errorf("go-git v5 no longer accepts fff1: %v", s.Err())
	}
	if _, _, _, err := Decode(in); err == nil {
		t.Errorf("Decode accepted fff1")
	}
}
