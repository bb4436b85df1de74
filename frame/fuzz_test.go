package frame

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// fuzzSeeds are the framing edge cases (control packets, 0003, the largest
// packet and the first too long, bad and truncated headers), every golden
// row of decodeRows and messageRows (M12's 20 MiB stream excepted) and a few
// encoder outputs.
func fuzzSeeds() []string {
	s := []string{
		"", "0000", "0001", "0002", "0003", "0004", "0005a", "0008ping0000", "000Aping12",
		"0008ERR ", "000cERR EOF\n", "fff0" + rep('s', 65516), "fff1", "ffff", "zzzz",
		" 008", "-008", "+008", "0x08", "000", "0008pi", "00010008ping0000",
		// go-git's scanner seeds are the same shapes: 0000..0004, fff1,
		// truncated headers.
		"00", "0", "0008ping00040008pong0000", "000400040000",
	}
	for _, r := range decodeRows {
		s = append(s, headerCases(r.in)...)
	}
	for _, r := range messageRows {
		s = append(s, r.in, upperHeaders(r.in))
	}
	s = append(s, string(AppendMessage(nil, patterned(70000))))
	return s
}

// FuzzDecode checks Decode's contract on arbitrary bytes.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		kind, payload, n, err := Decode(in)
		if n < 0 || n > len(in) {
			t.Fatalf("n = %d of %d", n, len(in))
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || n != 0 || payload != nil || len(in) < HeaderSize ||
				e.Offset != 0 || !bytes.Equal(e.Header[:], in[:4]) {
				t.Fatalf("bad error %v (n=%d)", err, n)
			}
			return
		}
		switch kind {
		case NeedMore:
			// Truly incomplete: no header yet, or a valid data header whose
			// packet is longer than what is there.
			if n != 0 || payload != nil {
				t.Fatalf("need-more with n=%d", n)
			}
			if len(in) >= HeaderSize {
				v := gitHeader(in)
				if v < 5 || v > MaxPacketSize || len(in) >= v {
					t.Fatalf("need-more on %q", in[:4])
				}
			}
			return
		case Flush, Delim, ResponseEnd:
			if n != 4 || payload != nil {
				t.Fatalf("%v: n=%d payload=%q", kind, n, payload)
			}
		case Data:
			if payload == nil || n != len(payload)+HeaderSize || n > MaxPacketSize ||
				!within(payload, in[:n]) || cap(payload) != len(payload) {
				t.Fatalf("data: n=%d len=%d", n, len(payload))
			}
			// Encoding the payload gives back the packet, header in lowercase.
			enc, err := AppendPacket(nil, payload)
			if err != nil || !bytes.Equal(enc, append([]byte(strings.ToLower(string(in[:4]))), payload...)) {
				t.Fatalf("re-encoding %q gives %q (%v)", in[:n], enc, err)
			}
			// Every proper prefix of the packet needs more.
			for _, k := range []int{0, 3, 4, n - 1} {
				if k >= 0 && k < n {
					if kk, _, m, err := Decode(in[:k]); kk != NeedMore || m != 0 || err != nil {
						t.Fatalf("prefix %d of %d: %v %d %v", k, n, kk, m, err)
					}
				}
			}
		default:
			t.Fatalf("kind %v", kind)
		}
		// Walking the whole input makes progress on every call.
		for p := in; ; {
			k, _, m, err := Decode(p)
			if err != nil || k == NeedMore {
				break
			}
			if m <= 0 {
				t.Fatalf("no progress")
			}
			p = p[m:]
		}
		// The input as a message round-trips through the encoder.
		if got, m, done, err := NewAssembler(SimpleIPC, 0).Next(AppendMessage(nil, in)); err != nil || !done ||
			m != EncodedLen(len(in)) || !bytes.Equal(got, in) {
			t.Fatalf("round trip: %v %v", done, err)
		}
	})
}

// gitHeader parses a header with the model's digit rule; -1 if invalid.
func gitHeader(b []byte) int {
	v := 0
	for _, c := range b[:4] {
		d, ok := gitHexDigit(c)
		if !ok {
			return -1
		}
		v = v*16 + d
	}
	return v
}

// refAssemble is a straightforward reference for the Assembler in both modes,
// over the whole stream: it returns the messages, their end offsets, and the
// final error (sentinel, offset) or io.EOF.
func refAssemble(in []byte, mode Mode, maxSize int) (msgs [][]byte, ends []int64, off int64, err error) {
	pos, start := 0, 0
	var cur []byte
	for {
		if len(in)-pos < 4 {
			if pos == len(in) && pos == start {
				return msgs, ends, 0, io.EOF
			}
			return msgs, ends, int64(pos), io.ErrUnexpectedEOF
		}
		v := gitHeader(in[pos:])
		fail := func(e error) ([][]byte, []int64, int64, error) { return msgs, ends, int64(pos), e }
		end := false
		switch {
		case v < 0:
			return fail(ErrBadHeader)
		case v == 3:
			return fail(ErrBadLength)
		case v > MaxPacketSize:
			return fail(ErrTooLong)
		case v == 0:
			end = true
		case v == 1 || v == 2:
			if mode == Persistent {
				return fail(ErrUnexpectedPacket)
			}
			end = true
		case v == 4:
			end = mode == SimpleIPC
		default:
			if len(cur)+v-4 > maxSize {
				return fail(ErrTooLarge)
			}
			if len(in)-pos < v {
				return msgs, ends, int64(pos), io.ErrUnexpectedEOF
			}
			cur = append(cur, in[pos+4:pos+v]...)
		}
		if v < 4 {
			pos += 4
		} else {
			pos += v
		}
		if end {
			msgs = append(msgs, append([]byte{}, cur...))
			ends = append(ends, int64(pos))
			cur = cur[:0]
			start = pos
		}
	}
}

// FuzzAssembler checks the Assembler in both modes against the reference,
// fed whole and in chunks, with a cap, and its memory against the cap.
func FuzzAssembler(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s), false, uint16(0), uint32(0))
		f.Add([]byte(s), true, uint16(1), uint32(6))
		f.Add([]byte(s), false, uint16(7), uint32(70000))
	}
	f.Fuzz(func(t *testing.T, in []byte, persistent bool, chunk uint16, maxSize uint32) {
		mode := SimpleIPC
		if persistent {
			mode = Persistent
		}
		limit := DefaultMaxMessageSize
		if maxSize != 0 {
			limit = int(maxSize % (1 << 18))
			if limit == 0 {
				limit = 1
			}
		}
		whole := feed(t, NewAssembler(mode, limit), in, 0)
		split := feed(t, NewAssembler(mode, limit), in, int(chunk))
		// With a BufferSource that poisons what it takes back: a buffer
		// still used after Put would corrupt a message.
		src := &poisonSource{}
		pa := NewAssembler(mode, limit)
		pa.SetBufferSource(src)
		pooled := feed(t, pa, in, int(chunk))
		pa.Release()
		if src.out != 0 {
			t.Fatalf("%d buffers still lent after Release", src.out)
		}
		direct := feedDirect(t, NewAssembler(mode, limit), in, int(chunk), int(chunk%3))
		msgs, ends, roff, rerr := refAssemble(in, mode, limit)
		for _, r := range []result{whole, split, pooled, direct} {
			if len(r.msgs) != len(msgs) {
				t.Fatalf("%d messages, reference %d", len(r.msgs), len(msgs))
			}
			for i := range msgs {
				if !bytes.Equal(r.msgs[i], msgs[i]) || r.ends[i] != ends[i] {
					t.Fatalf("message %d differs from the reference", i)
				}
			}
			if rerr == io.EOF {
				if r.err != io.EOF {
					t.Fatalf("end %v, reference io.EOF", r.err)
				}
			} else {
				var e *Error
				if !errors.As(r.err, &e) || e.Err != rerr || e.Offset != roff {
					t.Fatalf("end %v, reference %v at %d", r.err, rerr, roff)
				}
			}
			if r.maxAsm > limit+MaxPacketSize {
				t.Fatalf("assembly buffer grew to %d with a cap of %d", r.maxAsm, limit)
			}
		}
		// Whole and split agree on every error detail.
		var e1, e2 *Error
		if errors.As(whole.err, &e1) && (!errors.As(split.err, &e2) || *e1 != *e2) {
			t.Fatalf("whole %#v, split %#v", whole.err, split.err)
		}
		// Every delivered message round-trips through the encoder.
		for _, m := range whole.msgs {
			got, _, done, err := NewAssembler(mode, 0).Next(AppendMessage(nil, m))
			if !done || err != nil || !bytes.Equal(got, m) {
				t.Fatalf("round trip failed")
			}
		}
	})
}

// FuzzLibIPC checks DecodeLibIPC's contract on arbitrary bytes and caps.
func FuzzLibIPC(f *testing.F) {
	for _, r := range zigRows {
		f.Add([]byte(r.in), uint32(0))
	}
	f.Add([]byte{0, 0, 0, 5, 'h', 'e'}, uint32(3))
	f.Fuzz(func(t *testing.T, in []byte, maxPayload uint32) {
		limit := int(maxPayload % (1 << 20))
		payload, n, err := DecodeLibIPC(in, limit)
		if limit == 0 {
			limit = LibIPCMaxPayload
		}
		if n < 0 || n > len(in) {
			t.Fatalf("n = %d", n)
		}
		if err != nil {
			var e *LibIPCError
			if !errors.As(err, &e) || e.Err != ErrTooLong || n != 0 || payload != nil || len(in) < 4 || e.Length <= int64(limit) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		if n == 0 {
			if payload != nil {
				t.Fatalf("need-more with a payload")
			}
			if len(in) >= 4 && 4+int(uint32(in[0])<<24|uint32(in[1])<<16|uint32(in[2])<<8|uint32(in[3])) <= len(in) {
				t.Fatalf("need-more on a complete frame")
			}
			return
		}
		if payload == nil || n != 4+len(payload) || len(payload) > limit || !within(payload, in[:n]) || cap(payload) != len(payload) {
			t.Fatalf("payload %d bytes, n=%d", len(payload), n)
		}
		if len(payload) <= LibIPCMaxPayload {
			if enc, err := AppendLibIPC(nil, payload); err != nil || !bytes.Equal(enc, in[:n]) {
				t.Fatalf("re-encoding differs")
			}
		}
		if _, m, err := DecodeLibIPC(in[:n-1], limit); m != 0 || err != nil {
			t.Fatalf("prefix: %d %v", m, err)
		}
	})
}

// FuzzLibIPCC checks DecodeLibIPCC's contract on arbitrary bytes.
func FuzzLibIPCC(f *testing.F) {
	for _, r := range cRows {
		f.Add([]byte(r.in))
	}
	f.Add([]byte{3, 0, 0, 0, 2, 9, 'o', 'k'})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, n, err := DecodeLibIPCC(in)
		if n < 0 || n > len(in) {
			t.Fatalf("n = %d", n)
		}
		if err != nil {
			var e *LibIPCError
			if !errors.As(err, &e) || n != 0 || fr.Payload != nil || len(in) == 0 || e.Type != int(in[0]) {
				t.Fatalf("bad error %v", err)
			}
			if (e.Err == ErrUnknownType) != (in[0] > 3) {
				t.Fatalf("type %d: %v", in[0], err)
			}
			return
		}
		if n == 0 {
			if fr.Payload != nil {
				t.Fatalf("need-more with a payload")
			}
			return
		}
		if fr.Payload == nil || n != 6+len(fr.Payload) || len(fr.Payload) > LibIPCCMaxPayload ||
			!within(fr.Payload, in[:n]) || cap(fr.Payload) != len(fr.Payload) {
			t.Fatalf("payload %d bytes, n=%d", len(fr.Payload), n)
		}
		enc, err := AppendLibIPCC(nil, fr)
		switch {
		case len(fr.Payload) > LibIPCCMaxSend: // decoded, but more than a C peer holds
			if !errors.Is(err, ErrTooLong) {
				t.Fatalf("re-encoding %d bytes: %v, want ErrTooLong", len(fr.Payload), err)
			}
		case err != nil || !bytes.Equal(enc, in[:n]):
			t.Fatalf("re-encoding differs")
		}
		if _, m, err := DecodeLibIPCC(in[:n-1]); m != 0 || err != nil {
			t.Fatalf("prefix: %d %v", m, err)
		}
	})
}

// poisonSource is a BufferSource that counts its loans and overwrites every
// buffer it takes back.
type poisonSource struct{ out int }

func (p *poisonSource) Get(n int) []byte {
	p.out++
	return make([]byte, 0, n)
}

func (p *poisonSource) Put(b []byte) {
	p.out--
	b = b[:cap(b)]
	for i := range b {
		b[i] = 0xa5
	}
}
