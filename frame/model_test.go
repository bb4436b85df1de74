package frame

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

// This file holds a model of git's simple-ipc reader (append each packet's
// payload, stop at the first zero-length packet, discard everything on an
// error or truncation), kept independent of the package's code (its own hex
// parsing, its own loop), and the differential fuzz target that holds the
// Assembler to it.

// gitOutcome is what git's simple-ipc reader does with a byte stream.
type gitOutcome int

const (
	gitMessage   gitOutcome = iota // a message, ended by a zero-length packet
	gitError                       // "protocol error: ...", nothing delivered
	gitTruncated                   // EOF inside a packet or before the terminator: silent failure
	gitNoRequest                   // EOF before any byte
)

type gitResult struct {
	outcome gitOutcome
	msg     []byte
	end     int    // bytes read through the terminating packet (gitMessage)
	errAt   int    // offset of the failing header (gitError)
	errText string // git's message (gitError)
}

// gitHexDigit is git's hex digit rule: 0-9, a-f, A-F, nothing else.
func gitHexDigit(c byte) (int, bool) {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0'), true
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

// gitSIRead reads one request the way git's simple-ipc server does: packets
// in gentle mode, payloads appended to one buffer, stop at the first packet
// whose payload length is 0.
func gitSIRead(in []byte) gitResult {
	const bufferSize = 65516 + 1 // LARGE_PACKET_DATA_MAX, plus git's NUL
	var msg []byte
	pos := 0
	if len(in) == 0 {
		return gitResult{outcome: gitNoRequest}
	}
	for {
		if len(in)-pos < 4 {
			return gitResult{outcome: gitTruncated}
		}
		hdr := in[pos : pos+4]
		length := 0
		for _, c := range hdr {
			d, ok := gitHexDigit(c)
			if !ok {
				text := hdr
				for i, c := range hdr {
					if c == 0 {
						text = hdr[:i]
						break
					}
				}
				return gitResult{outcome: gitError, errAt: pos,
					errText: "protocol error: bad line length character: " + string(text)}
			}
			length = length*16 + d
		}
		payloadLen := 0
		switch {
		case length == 0, length == 1, length == 2:
			// flush, delim, response-end: a packet with no payload
		case length < 4:
			return gitResult{outcome: gitError, errAt: pos,
				errText: fmt.Sprintf("protocol error: bad line length %d", length)}
		default:
			payloadLen = length - 4
			if payloadLen >= bufferSize {
				return gitResult{outcome: gitError, errAt: pos,
					errText: fmt.Sprintf("protocol error: bad line length %d", payloadLen)}
			}
		}
		if len(in)-pos-4 < payloadLen {
			return gitResult{outcome: gitTruncated}
		}
		if payloadLen == 0 {
			return gitResult{outcome: gitMessage, msg: msg, end: pos + 4}
		}
		msg = append(msg, in[pos+4:pos+4+payloadLen]...)
		pos += 4 + payloadLen
	}
}

// gitText renders a frame error as git's reader would log it.
func gitText(e *Error) string {
	switch e.Err {
	case ErrBadHeader:
		h := e.Header[:]
		for i, c := range h {
			if c == 0 {
				h = h[:i]
				break
			}
		}
		return "protocol error: bad line length character: " + string(h)
	case ErrBadLength:
		return fmt.Sprintf("protocol error: bad line length %d", e.Length)
	case ErrTooLong:
		return fmt.Sprintf("protocol error: bad line length %d", e.Length-HeaderSize)
	}
	return "unexpected error " + e.Error()
}

// compareWithGit checks one stream: the Assembler (SI, fed in chunks) must
// accept and reject what git does, end the first message at the same byte,
// and deliver the same bytes.
func compareWithGit(t *testing.T, in []byte, chunk int) {
	t.Helper()
	g := gitSIRead(in)
	r := feed(t, NewAssembler(SimpleIPC, 0), in, chunk)
	switch g.outcome {
	case gitMessage:
		if len(r.msgs) == 0 || string(r.msgs[0]) != string(g.msg) || r.ends[0] != int64(g.end) {
			t.Fatalf("%q: git reads %q ending at %d; assembler %q ending at %v (end %v)",
				in, g.msg, g.end, trimmed(r.msgs), r.ends, r.err)
		}
		return
	case gitNoRequest:
		if len(r.msgs) != 0 || r.err != io.EOF {
			t.Fatalf("%q: git sees no request; assembler %q %v", in, trimmed(r.msgs), r.err)
		}
		return
	}
	var e *Error
	if len(r.msgs) != 0 || !errors.As(r.err, &e) {
		t.Fatalf("%q: git fails (%v); assembler %q %v", in, g.outcome, trimmed(r.msgs), r.err)
	}
	if g.outcome == gitTruncated {
		if e.Err != io.ErrUnexpectedEOF {
			t.Fatalf("%q: git sees a truncation; assembler %v", in, r.err)
		}
		return
	}
	if got := gitText(e); got != g.errText || e.Offset != int64(g.errAt) {
		t.Fatalf("%q: git logs %q at %d; assembler %q at %d", in, g.errText, g.errAt, got, e.Offset)
	}
}

// The model itself against what git's reader is known to do, and against
// exchanges observed with git's daemon, so that the oracle is checked before
// it judges.
func TestGitModel(t *testing.T) {
	for _, c := range []struct {
		in   string
		want gitResult
	}{
		{"0008ping0000", gitResult{outcome: gitMessage, msg: []byte("ping"), end: 12}},
		{"000Aping120000", gitResult{outcome: gitMessage, msg: []byte("ping12"), end: 14}},
		{"0000", gitResult{outcome: gitMessage, end: 4}},
		{"00010008ping0000", gitResult{outcome: gitMessage, end: 4}},
		{"00020008ping0000", gitResult{outcome: gitMessage, end: 4}},
		{"00040008ping0000", gitResult{outcome: gitMessage, end: 4}},
		{"0008ping0005!0000", gitResult{outcome: gitMessage, msg: []byte("ping!"), end: 17}},
		{"zzzz0000", gitResult{outcome: gitError, errText: "protocol error: bad line length character: zzzz"}},
		{"\x00\x00\x00\x08", gitResult{outcome: gitError, errText: "protocol error: bad line length character: "}},
		{"00030000", gitResult{outcome: gitError, errText: "protocol error: bad line length 3"}},
		{"fff1", gitResult{outcome: gitError, errText: "protocol error: bad line length 65517"}},
		{"ffff", gitResult{outcome: gitError, errText: "protocol error: bad line length 65531"}},
		{"0008ping00030000", gitResult{outcome: gitError, errAt: 8, errText: "protocol error: bad line length 3"}},
		{"fff0" + rep('a', 65516) + "0000", gitResult{outcome: gitMessage, msg: []byte(rep('a', 65516)), end: 65524}},
		{"00", gitResult{outcome: gitTruncated}},
		{"0010abc", gitResult{outcome: gitTruncated}},
		{"0008ping", gitResult{outcome: gitTruncated}},
		{"", gitResult{outcome: gitNoRequest}},
	} {
		got := gitSIRead([]byte(c.in))
		if got.outcome != c.want.outcome || string(got.msg) != string(c.want.msg) || got.end != c.want.end ||
			got.errAt != c.want.errAt || got.errText != c.want.errText {
			t.Errorf("%.20q: model = %+v, want %+v", c.in, got, c.want)
		}
	}
}

// Every seed stream, whole and in small chunks, against the model.
func TestAssemblerVsGitSeeds(t *testing.T) {
	for _, s := range fuzzSeeds() {
		for _, chunk := range []int{0, 1, 3, 5, 4096} {
			compareWithGit(t, []byte(s), chunk)
		}
	}
}

func FuzzAssemblerVsGit(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s), uint16(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint16) {
		compareWithGit(t, in, int(chunk))
	})
}
