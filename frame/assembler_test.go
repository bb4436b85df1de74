package frame

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// want is one expected assembler outcome.
type want struct {
	msgs   []string
	ends   []int64
	err    error // sentinel; nil means a clean io.EOF after the messages
	offset int64 // of the error
}

// messageRows are golden message cases M1–M11 (M12, a stream past the size
// cap, has its own test): the bytes, and the messages each mode delivers
// from them. In SimpleIPC mode any zero-length packet ends a message, as in
// git's reader; in Persistent mode only 0000 does.
var messageRows = []struct {
	id         string
	in         string
	si, persis want
}{
	{"M1", "0000", want{msgs: []string{""}, ends: []int64{4}}, want{msgs: []string{""}, ends: []int64{4}}},
	{"M2", "0008ping0000", want{msgs: []string{"ping"}, ends: []int64{12}}, want{msgs: []string{"ping"}, ends: []int64{12}}},
	{"M3", "0008ping0005!0000", want{msgs: []string{"ping!"}, ends: []int64{17}}, want{msgs: []string{"ping!"}, ends: []int64{17}}},
	{"M4", "0009ping\n0000", want{msgs: []string{"ping\n"}, ends: []int64{13}}, want{msgs: []string{"ping\n"}, ends: []int64{13}}},
	// M5: SI ends at 0001; the next 12 bytes are a message of their own to
	// an assembler that keeps going (the SI engine closes instead).
	{"M5", "00010008ping0000",
		want{msgs: []string{"", "ping"}, ends: []int64{4, 16}},
		want{err: ErrUnexpectedPacket, offset: 0}},
	{"M6", "0008ping00020008pong0000",
		want{msgs: []string{"ping", "pong"}, ends: []int64{12, 24}},
		want{err: ErrUnexpectedPacket, offset: 8}},
	{"M7", "0008ping00040008pong0000",
		want{msgs: []string{"ping", "pong"}, ends: []int64{12, 24}},
		want{msgs: []string{"pingpong"}, ends: []int64{24}}},
	{"M8", "fff0" + rep('a', 65516) + "86b8" + rep('a', 34484) + "0000",
		want{msgs: []string{rep('a', 100000)}, ends: []int64{100012}},
		want{msgs: []string{rep('a', 100000)}, ends: []int64{100012}}},
	{"M9", "0008ping",
		want{err: io.ErrUnexpectedEOF, offset: 8},
		want{err: io.ErrUnexpectedEOF, offset: 8}},
	{"M10", "0008ping0000" + "0008pong0000",
		want{msgs: []string{"ping", "pong"}, ends: []int64{12, 24}},
		want{msgs: []string{"ping", "pong"}, ends: []int64{12, 24}}},
	{"M11", "0008ping00030000",
		want{err: ErrBadLength, offset: 8},
		want{err: ErrBadLength, offset: 8}},
}

func checkResult(t *testing.T, got result, w want) {
	t.Helper()
	if len(got.msgs) != len(w.msgs) {
		t.Fatalf("got %d messages (%q), want %d", len(got.msgs), trimmed(got.msgs), len(w.msgs))
	}
	for i := range w.msgs {
		if string(got.msgs[i]) != w.msgs[i] || got.ends[i] != w.ends[i] {
			t.Fatalf("message %d = %q ending at %d, want %q ending at %d",
				i, trimmed(got.msgs[i:i+1]), got.ends[i], trimmed([][]byte{[]byte(w.msgs[i])}), w.ends[i])
		}
	}
	if w.err == nil {
		if got.err != io.EOF {
			t.Fatalf("end = %v, want io.EOF", got.err)
		}
		return
	}
	var e *Error
	if !errors.As(got.err, &e) || !errors.Is(got.err, w.err) || e.Offset != w.offset {
		t.Fatalf("end = %v, want *Error wrapping %v at offset %d", got.err, w.err, w.offset)
	}
}

func trimmed(msgs [][]byte) []string {
	var s []string
	for _, m := range msgs {
		if len(m) > 20 {
			m = append(m[:20:20], "..."...)
		}
		s = append(s, string(m))
	}
	return s
}

// Every golden message row, in both modes, both header cases, whole and in
// chunks of every size from 1 byte up (so every split point is exercised).
func TestAssemblerGolden(t *testing.T) {
	for _, row := range messageRows {
		for mode, w := range map[Mode]want{SimpleIPC: row.si, Persistent: row.persis} {
			for ci, in := range []string{row.in, upperHeaders(row.in)} {
				t.Run(row.id+"/"+mode.String()+"/case"+string(rune('0'+ci)), func(t *testing.T) {
					chunks := []int{0, 1, 2, 3, 4, 5, 7, 13, 4096, 65519, 65521}
					if len(in) < 64 {
						for c := 6; c < len(in); c++ {
							chunks = append(chunks, c)
						}
					}
					for _, chunk := range chunks {
						got := feed(t, NewAssembler(mode, 0), []byte(in), chunk)
						checkResult(t, got, w)
					}
				})
			}
		}
	}
}

// upperHeaders upper-cases the hex letters of every header of a valid
// stream, walking it packet by packet (payloads stay as they are).
func upperHeaders(s string) string {
	b := []byte(s)
	for p := 0; len(b)-p >= HeaderSize; {
		v := headerValue(b[p:])
		if v < 0 {
			break
		}
		copy(b[p:], strings.ToUpper(string(b[p:p+4])))
		if v < HeaderSize {
			v = HeaderSize
		}
		p += v
	}
	return string(b)
}

// The common path, one data packet and a flush fully buffered, hands out a
// subslice of the input; two packets are copied into the assembler.
func TestAssemblerZeroCopy(t *testing.T) {
	in := []byte("0008ping0000rest")
	a := NewAssembler(SimpleIPC, 0)
	msg, n, done, err := a.Next(in)
	if err != nil || !done || n != 12 || string(msg) != "ping" {
		t.Fatalf("Next = %q %d %v %v", msg, n, done, err)
	}
	if &msg[0] != &in[4] || cap(msg) != 4 {
		t.Fatalf("single-packet message was copied (or has spare capacity)")
	}
	// The same message arriving in pieces stays zero-copy.
	a = NewAssembler(SimpleIPC, 0)
	for i := range 12 {
		msg, n, done, err = a.Next(in[:i])
		if err != nil || done || n != 0 {
			t.Fatalf("prefix %d: %q %d %v %v", i, msg, n, done, err)
		}
	}
	if msg, n, done, err = a.Next(in[:12]); !done || &msg[0] != &in[4] || n != 12 || err != nil {
		t.Fatalf("split message was copied: %v %d %v", done, n, err)
	}
	// Two packets: copied.
	in2 := []byte("0008ping0005!0000")
	a = NewAssembler(SimpleIPC, 0)
	msg, _, _, _ = a.Next(in2)
	if string(msg) != "ping!" || within(msg, in2) || !within(msg, a.buf[:cap(a.buf)]) {
		t.Fatalf("multi-packet message %q does not alias the assembler buffer", msg)
	}
	// Persistent: empty data packets around one data packet keep it contiguous.
	in3 := []byte("000400040008ping00040000")
	a = NewAssembler(Persistent, 0)
	msg, n, done, err = a.Next(in3)
	if err != nil || !done || n != len(in3) || string(msg) != "ping" || &msg[0] != &in3[12] {
		t.Fatalf("persistent: %q %d %v %v", msg, n, done, err)
	}
	// An empty message is an empty, non-nil-safe slice.
	a = NewAssembler(SimpleIPC, 0)
	if msg, n, done, err = a.Next([]byte("0000")); err != nil || !done || n != 4 || len(msg) != 0 {
		t.Fatalf("empty: %q %d %v %v", msg, n, done, err)
	}
}

// TestAssemblerEmptyPacketRun: in Persistent mode a run of empty data
// packets longer than the read buffer is absorbed like data packets, so
// the reader always makes progress, and the message after them (and one
// among them) arrives whole.
func TestAssemblerEmptyPacketRun(t *testing.T) {
	run := bytes.Repeat([]byte("0004"), 60000) // 240,000 bytes, beyond MinReadBuffer
	var in []byte
	in = append(in, run...)
	in = append(in, "0008ping"...)
	in = append(in, run...)
	in = append(in, "0000"...)
	in = append(in, run...)
	in = append(in, "0008pong0000"...)
	r := NewReader(bytes.NewReader(in), Persistent, 0)
	for _, want := range []string{"ping", "pong"} {
		msg, err := r.ReadMessage()
		if err != nil || string(msg) != want {
			t.Fatalf("ReadMessage = %q, %v; want %q", msg, err, want)
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

// A message larger than AbsorbThreshold that arrives in pieces is absorbed,
// first once the threshold is reached, then packet by packet: the caller
// never has to hold more than MinReadBuffer bytes, and the scan resumes
// where it stopped.
func TestAssemblerAbsorb(t *testing.T) {
	msg := bytes.Repeat([]byte("0123456789"), 50000) // 500,000 bytes, 8 packets
	in := AppendMessage(nil, msg)
	a := NewAssembler(SimpleIPC, 0)
	var pending []byte
	absorbed := 0
	var got []byte
	for i := 0; i < len(in) && got == nil; i += 1000 {
		pending = append(pending, in[i:min(i+1000, len(in))]...)
		if len(pending) > MinReadBuffer {
			t.Fatalf("caller had to hold %d bytes", len(pending))
		}
		m, n, done, err := a.Next(pending)
		if err != nil {
			t.Fatal(err)
		}
		if !done && n > 0 {
			if n < AbsorbThreshold && absorbed == 0 {
				t.Fatalf("first absorbed %d bytes, below the threshold", n)
			}
			absorbed += n
			if a.Buffered() == 0 {
				t.Fatalf("Buffered() = 0 after absorbing")
			}
		}
		pending = pending[n:]
		if done {
			got = m
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("reassembled %d bytes, want %d", len(got), len(msg))
	}
	if absorbed == 0 {
		t.Fatalf("nothing was absorbed")
	}
	if a.Buffered() != 0 {
		t.Fatalf("Buffered() = %d after delivery", a.Buffered())
	}
}

// The truncation answer at EOF (Truncated) in each situation.
func TestAssemblerTruncated(t *testing.T) {
	type c struct {
		in     string
		mode   Mode
		chunk  int
		err    error
		offset int64
		header string
		length int
	}
	big := string(AppendData(nil, bytes.Repeat([]byte{'x'}, 300000)))
	for _, c := range []c{
		{in: "", err: io.EOF},
		{in: "0008ping0000", err: io.EOF},
		{in: "0", err: io.ErrUnexpectedEOF, offset: 0, header: "0", length: -1},
		{in: "000", err: io.ErrUnexpectedEOF, offset: 0, header: "000", length: -1},
		{in: "0008pi", err: io.ErrUnexpectedEOF, offset: 0, header: "0008", length: 8},
		{in: "0008ping0000000", err: io.ErrUnexpectedEOF, offset: 12, header: "000", length: -1},
		{in: "0008ping", err: io.ErrUnexpectedEOF, offset: 8, length: -1},
		{in: "00040004", mode: Persistent, err: io.ErrUnexpectedEOF, offset: 8, length: -1},
		// Absorbed bytes and nothing left: still a truncation.
		{in: big, chunk: 7000, err: io.ErrUnexpectedEOF, offset: int64(len(big)), length: -1},
		{in: big[:len(big)-1], chunk: 7000, err: io.ErrUnexpectedEOF, offset: int64(len(big) - 300000%MaxPayloadSize - 4), header: "", length: 300000%MaxPayloadSize + 4},
	} {
		got := feed(t, NewAssembler(c.mode, 0), []byte(c.in), c.chunk)
		if c.err == io.EOF {
			if got.err != io.EOF {
				t.Errorf("%.20q: %v, want io.EOF", c.in, got.err)
			}
			continue
		}
		var e *Error
		if !errors.As(got.err, &e) || e.Err != c.err || e.Offset != c.offset || e.Length != c.length {
			t.Errorf("%.20q: %#v, want %v at %d length %d", c.in, got.err, c.err, c.offset, c.length)
			continue
		}
		if c.header != "" && string(e.Header[:len(c.header)]) != c.header {
			t.Errorf("%.20q: header %q, want %q", c.in, e.Header, c.header)
		}
		if len(got.msgs) > 1 {
			t.Errorf("%.20q: delivered %d messages", c.in, len(got.msgs))
		}
	}
	// Truncated after the stream failed returns that failure.
	a := NewAssembler(SimpleIPC, 0)
	_, _, _, err := a.Next([]byte("zzzz"))
	if err == nil || a.Truncated(4) != err {
		t.Fatalf("Truncated after failure = %v, want %v", a.Truncated(4), err)
	}
	// A delivered message with unexamined bytes after it, then EOF.
	a = NewAssembler(SimpleIPC, 0)
	a.Next([]byte("0008ping0000ab"))
	var e *Error
	if err := a.Truncated(2); !errors.As(err, &e) || e.Err != io.ErrUnexpectedEOF || e.Offset != 12 {
		t.Fatalf("Truncated(2) after a message = %v", err)
	}
}

// Errors are sticky until Reset, and Reset restarts offsets and keeps the
// buffer.
func TestAssemblerStickyAndReset(t *testing.T) {
	a := NewAssembler(SimpleIPC, 0)
	if _, _, _, err := a.Next([]byte("0008ping0005!0000")); err != nil {
		t.Fatal(err)
	}
	buf := a.buf[:1]
	_, _, _, err1 := a.Next([]byte("0008ping0003"))
	_, n, done, err2 := a.Next([]byte("0000"))
	if err1 == nil || err2 != err1 || n != 0 || done {
		t.Fatalf("errors not sticky: %v then %v", err1, err2)
	}
	var e *Error
	if !errors.As(err1, &e) || e.Offset != 17+8 {
		t.Fatalf("offset %v, want 25 (counted across messages)", err1)
	}
	a.Reset()
	_, _, _, err := a.Next([]byte("0001zzzz"))
	if err != nil {
		t.Fatalf("after Reset: %v", err)
	}
	_, _, _, err = a.Next([]byte("zzzz"))
	if !errors.As(err, &e) || e.Offset != 4 {
		t.Fatalf("offset after Reset = %v, want 4", err)
	}
	a.Reset()
	msg, _, _, _ := a.Next([]byte("0005a0005b0000"))
	if string(msg) != "ab" || &a.buf[:1][0] != &buf[0] {
		t.Fatalf("Reset did not keep the buffer")
	}
	// A partial message is forgotten by Reset.
	a.Reset()
	big := AppendData(nil, make([]byte, 3*MaxPayloadSize))
	if _, n, _, _ := a.Next(big); n == 0 || a.Buffered() == 0 {
		t.Fatalf("expected an absorb, n=%d", n)
	}
	a.Reset()
	if a.Buffered() != 0 || a.Truncated(0) != io.EOF {
		t.Fatalf("Reset kept the partial message")
	}
}

// A caller that breaks the contract by shortening its buffer gets a rescan,
// not a panic or a wrong message.
func TestAssemblerShortenedBuffer(t *testing.T) {
	a := NewAssembler(SimpleIPC, 0)
	if _, n, done, err := a.Next([]byte("0008ping0005!00")); n != 0 || done || err != nil {
		t.Fatalf("%d %v %v", n, done, err)
	}
	msg, n, done, err := a.Next([]byte("0003"))
	if err == nil || done || n != 0 || msg != nil {
		t.Fatalf("rescan = %q %d %v %v, want the bad-length error", msg, n, done, err)
	}
	a = NewAssembler(SimpleIPC, 0)
	a.Next([]byte("0008ping0005!00"))
	if msg, n, done, err := a.Next([]byte("0006ok0000")); string(msg) != "ok" || n != 10 || !done || err != nil {
		t.Fatalf("rescan = %q %d %v %v", msg, n, done, err)
	}
}

// The cap is checked from the header: a packet that would cross it fails
// before its payload arrives, a message exactly at the cap passes.
func TestAssemblerCap(t *testing.T) {
	for _, mode := range []Mode{SimpleIPC, Persistent} {
		a := NewAssembler(mode, 10)
		if msg, _, _, err := a.Next([]byte("0008ping000aping120000")); err != nil || string(msg) != "pingping12" {
			t.Fatalf("at the cap: %q %v", msg, err)
		}
		a = NewAssembler(mode, 10)
		_, n, _, err := a.Next([]byte("0008ping000bping12")) // second payload incomplete
		var e *Error
		if !errors.As(err, &e) || e.Err != ErrTooLarge || e.Offset != 8 || e.Length != 11 || n != 0 {
			t.Fatalf("over the cap: %v", err)
		}
	}
	if NewAssembler(SimpleIPC, -1).max != DefaultMaxMessageSize {
		t.Fatal("maxSize <= 0 is not the default")
	}
}

// packetSource yields a pkt-line stream lazily: a prefix, then count full
// packets of filler, then a flush; it counts the bytes read from it.
type packetSource struct {
	prefix []byte
	count  int
	pkt    []byte
	cur    []byte
	read   int64
}

func newPacketSource(prefix string, count int) *packetSource {
	pkt, _ := AppendPacket(nil, bytes.Repeat([]byte{'a'}, MaxPayloadSize))
	return &packetSource{prefix: []byte(prefix), count: count, pkt: pkt}
}

func (s *packetSource) Read(p []byte) (int, error) {
	if len(s.cur) == 0 {
		switch {
		case s.prefix != nil:
			s.cur, s.prefix = s.prefix, nil
		case s.count > 0:
			s.cur = s.pkt
			s.count--
		case s.count == 0:
			s.cur = []byte("0000")
			s.count--
		default:
			return 0, io.EOF
		}
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	s.read += int64(n)
	return n, nil
}

// M12: 0008ping then 20 MiB of valid packets against a 16 MiB cap. The
// error comes once the total would pass 16 MiB, nothing is delivered, the
// rest of the 20 MiB is never read, and memory stays within the cap: the
// assembly buffer never exceeds cap plus one packet, and all allocations
// together stay below the doubling series up to the cap (a reader that
// buffered the whole 20 MiB would allocate far more).
func TestAssemblerM12Cap(t *testing.T) {
	const capSize = 16 << 20
	for _, mode := range []Mode{SimpleIPC, Persistent} {
		src := newPacketSource("0008ping", (20<<20)/MaxPayloadSize+1)
		r := NewReader(src, mode, capSize)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		msg, err := r.ReadMessage()
		runtime.ReadMemStats(&ms1)
		var e *Error
		if msg != nil || !errors.As(err, &e) || e.Err != ErrTooLarge {
			t.Fatalf("%v: ReadMessage = %d bytes, %v; want ErrTooLarge", mode, len(msg), err)
		}
		// The offending packet is the first whose payload crosses the cap.
		k := (capSize - 4) / MaxPayloadSize
		if wantOff := int64(8 + k*MaxPacketSize); e.Offset != wantOff || e.Length != MaxPacketSize {
			t.Fatalf("%v: error at %d (length %d), want %d", mode, e.Offset, e.Length, wantOff)
		}
		if src.read > capSize+MinReadBuffer {
			t.Fatalf("%v: read %d bytes of input before failing", mode, src.read)
		}
		if c := cap(r.asm.buf); c > capSize+MaxPacketSize {
			t.Fatalf("%v: assembly buffer grew to %d", mode, c)
		}
		t.Logf("%v: allocated %d, read %d, buf cap %d", mode, ms1.TotalAlloc-ms0.TotalAlloc, src.read, cap(r.asm.buf))
		if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 2*capSize+2*MinReadBuffer+1<<20 {
			t.Fatalf("%v: allocated %d bytes", mode, alloc)
		}
	}
}

// budgetSource lends at most limit bytes in all.
type budgetSource struct {
	poisonSource
	limit, lent int
}

func (b *budgetSource) Get(n int) []byte {
	if b.lent+n > b.limit {
		return nil
	}
	b.lent += n
	return b.poisonSource.Get(n)
}

func (b *budgetSource) Put(p []byte) {
	b.lent -= cap(p)
	b.poisonSource.Put(p)
}

// TestAssemblerBufferSource: large messages are gathered in buffers from the
// source, which get them back between messages and on Release; a refusal
// fails the message with ErrNoBuffer, and nothing stays lent.
func TestAssemblerBufferSource(t *testing.T) {
	src := &budgetSource{limit: 1 << 20}
	a := NewAssembler(Persistent, 0)
	a.SetBufferSource(src)
	big := bytes.Repeat([]byte("x"), 300_000)
	for range 3 {
		in := AppendMessage(nil, big)
		r := feed(t, a, in, 4096)
		if len(r.msgs) != 1 || !bytes.Equal(r.msgs[0], big) || r.err != nil && r.err != io.EOF {
			t.Fatalf("got %d messages, %v", len(r.msgs), r.err)
		}
	}
	// A small message after a large one: the large buffer goes back.
	if _, _, done, err := a.Next(AppendMessage(nil, []byte("small"))); !done || err != nil {
		t.Fatalf("small: %v %v", done, err)
	}
	if a.Held() > sourceKeep || src.out > 1 {
		t.Fatalf("holds %d bytes, %d buffers lent, after a small message", a.Held(), src.out)
	}
	a.Release()
	if src.out != 0 || src.lent != 0 || a.Held() != 0 {
		t.Fatalf("after Release: %d buffers, %d bytes lent", src.out, src.lent)
	}
	// Over the budget: refused with ErrNoBuffer, where the packet starts.
	r := feed(t, a, AppendMessage(nil, bytes.Repeat([]byte("y"), 2<<20)), 65536)
	var e *Error
	if !errors.As(r.err, &e) || !errors.Is(r.err, ErrNoBuffer) {
		t.Fatalf("over budget: %v", r.err)
	}
	a.Release()
	if src.out != 0 || src.lent != 0 {
		t.Fatalf("after a refusal: %d buffers, %d bytes lent", src.out, src.lent)
	}
}

// askSource records the sizes asked of it and refuses them all.
type askSource struct{ asked []int }

func (s *askSource) Get(n int) []byte { s.asked = append(s.asked, n); return nil }
func (s *askSource) Put([]byte)       {}

// TestAssemblerGrowthPastGiB: a message past 1 GiB asks for a buffer at
// the cap, not at a power of two that a 32-bit int cannot hold (it asked
// for a negative size there).
func TestAssemblerGrowthPastGiB(t *testing.T) {
	const limit = 1<<31 - 1
	for _, total := range []int{1<<30 + 1, limit} {
		src := &askSource{}
		a := NewAssembler(Persistent, limit)
		a.SetBufferSource(src)
		a.total = total // what gathering that many bytes would have counted
		if a.gather(nil) {
			t.Fatalf("total %d: a refused buffer was taken", total)
		}
		if len(src.asked) != 1 || src.asked[0] != limit {
			t.Fatalf("total %d: asked for %v, want [%d]", total, src.asked, limit)
		}
	}
}

// TestAssemblerDetach: a gathered message can be kept past the next one by
// detaching its buffer; a message that aliases the input has nothing to
// detach.
func TestAssemblerDetach(t *testing.T) {
	src := &poisonSource{}
	a := NewAssembler(Persistent, 0)
	a.SetBufferSource(src)
	big := bytes.Repeat([]byte("z"), 200_000)
	in := AppendMessage(nil, big)
	var msg []byte
	for len(in) > 0 {
		m, n, done, err := a.Next(in[:min(len(in), MinReadBuffer)])
		if err != nil {
			t.Fatal(err)
		}
		in = in[n:]
		if done {
			msg = m
			break
		}
	}
	kept := a.Detach()
	if kept == nil || &kept[0] != &msg[0] || a.Held() != 0 {
		t.Fatalf("Detach returned %d bytes, assembler holds %d", len(kept), a.Held())
	}
	if m, _, done, err := a.Next(AppendMessage(nil, bytes.Repeat([]byte("q"), 100_000))); !done || err != nil || len(m) != 100_000 {
		t.Fatalf("next message: %d bytes, %v", len(m), err)
	}
	if !bytes.Equal(msg, big) {
		t.Fatal("the detached message changed")
	}
	if a.Detach() == nil {
		t.Fatal("the second gathered message had nothing to detach")
	}
	if m, _, done, _ := a.Next(AppendMessage(nil, []byte("one packet"))); !done || string(m) != "one packet" || a.Detach() != nil {
		t.Fatal("a single-packet message lies in the input: nothing to detach")
	}
	src.Put(kept)
	a.Release()
}

// TestAssemblerLargeAgainstReference: streams of large messages in
// packets of every size, fed in random pieces and cut at random points,
// give what the reference reader gives, errors and offsets included. Large
// messages make the Assembler absorb incomplete packets, which inputs
// small enough for the fuzzer rarely do.
func TestAssemblerLargeAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	for round := range 60 {
		var in []byte
		for range 1 + rng.IntN(3) {
			size := rng.IntN(600_000)
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(rng.Uint32())
			}
			for len(payload) > 0 {
				n := min(len(payload), 1+rng.IntN(MaxPacketSize-HeaderSize))
				in = AppendData(in, payload[:n])
				payload = payload[n:]
			}
			in = AppendFlush(in)
		}
		if round%3 == 1 {
			in = in[:rng.IntN(len(in))] // cut short
		}
		mode := Mode(round % 2)
		src := &poisonSource{}
		a := NewAssembler(mode, 0)
		if round%4 < 2 {
			a.SetBufferSource(src)
		}
		got := feed(t, a, in, 1+rng.IntN(100_000))
		msgs, ends, roff, rerr := refAssemble(in, mode, DefaultMaxMessageSize)
		if len(got.msgs) != len(msgs) {
			t.Fatalf("round %d: %d messages, reference %d", round, len(got.msgs), len(msgs))
		}
		for i := range msgs {
			if !bytes.Equal(got.msgs[i], msgs[i]) || got.ends[i] != ends[i] {
				t.Fatalf("round %d: message %d differs from the reference", round, i)
			}
		}
		if rerr == io.EOF {
			if got.err != io.EOF {
				t.Fatalf("round %d: end %v, reference io.EOF", round, got.err)
			}
		} else {
			var e *Error
			if !errors.As(got.err, &e) || e.Err != rerr || e.Offset != roff {
				t.Fatalf("round %d: end %v, reference %v at %d", round, got.err, rerr, roff)
			}
		}
		a.Release()
		if src.out != 0 {
			t.Fatalf("round %d: %d buffers still lent", round, src.out)
		}
	}
}

// TestAssemblerDirect: a caller that reads the rest of large packets
// straight into the assembler (Direct, Fill) gets the same messages, at
// the same offsets, as one that copies through its own buffer, and most of
// a large message's bytes take the direct way; a message cut short in the
// middle of a directly read packet is reported where that packet starts.
func TestAssemblerDirect(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	in := AppendMessage(nil, big)
	in = AppendMessage(in, []byte("small"))
	in = AppendMessage(in, big[:200_000])
	for _, chunk := range []int{4096, 65520, 100_000, 0} {
		for _, mode := range []Mode{SimpleIPC, Persistent} {
			want := feed(t, NewAssembler(mode, 0), in, chunk)
			got := feedDirect(t, NewAssembler(mode, 0), in, chunk, 2)
			if len(got.msgs) != 3 || len(want.msgs) != 3 {
				t.Fatalf("chunk %d: %d and %d messages, want 3", chunk, len(got.msgs), len(want.msgs))
			}
			for i := range want.msgs {
				if !bytes.Equal(got.msgs[i], want.msgs[i]) || got.ends[i] != want.ends[i] {
					t.Fatalf("chunk %d: message %d differs", chunk, i)
				}
			}
			if got.err != io.EOF {
				t.Fatalf("chunk %d: end %v", chunk, got.err)
			}
			// Once gathering has begun, reads of any size take the
			// direct way for most of a large message.
			if chunk > 0 && got.direct < int64(len(big)/2) {
				t.Fatalf("chunk %d: only %d bytes read directly", chunk, got.direct)
			}
		}
	}
	cut := in[:len(AppendMessage(nil, big))-100_000]
	want := feed(t, NewAssembler(SimpleIPC, 0), cut, 65520)
	got := feedDirect(t, NewAssembler(SimpleIPC, 0), cut, 65520, 2)
	var e1, e2 *Error
	if !errors.As(got.err, &e1) || !errors.As(want.err, &e2) || *e1 != *e2 || !errors.Is(got.err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut short: %v, copying caller %v", got.err, want.err)
	}
	a := NewAssembler(SimpleIPC, 0)
	if a.Direct() != nil {
		t.Fatal("Direct offered room with no packet pending")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Fill beyond Direct's slice did not panic")
		}
	}()
	a.Fill(1)
}

// TestAssemblerPlanRandom: streams of large and small messages whose
// packets are full, short or empty, sometimes ending in a bad header or cut
// short, decode the same, to the byte and the error offset, whether the
// reader copies everything or reads into Plan's pieces and puts what
// Filled spills back in front.
func TestAssemblerPlanRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	var direct, spilled int64
	defer func() {
		if !t.Failed() && (direct == 0 || spilled == 0) {
			t.Errorf("the streams never took the direct way (%d bytes) or never spilled (%d bytes)", direct, spilled)
		}
	}()
	iters := 150
	if raceEnabled {
		iters = 30 // every byte is checked: seconds per stream
	}
	for iter := range iters {
		var in []byte
		for range 1 + rng.IntN(4) {
			for range rng.IntN(30) {
				n := MaxPayloadSize
				if rng.IntN(4) == 0 {
					n = rng.IntN(MaxPayloadSize)
				}
				in, _ = AppendPacket(in, bytes.Repeat([]byte{byte('a' + iter%26)}, n))
			}
			in = AppendFlush(in)
		}
		switch rng.IntN(4) {
		case 0:
			in = append(in, "fff0zz"...) // a full packet cut short
		case 1:
			in = append(in, "00x1"...) // a bad header
		case 2:
			in = in[:len(in)-rng.IntN(min(len(in), 70_000))]
		}
		mode := []Mode{SimpleIPC, Persistent}[rng.IntN(2)]
		limit := []int{0, 1 << 20, 300_000}[rng.IntN(3)]
		chunk := 1 + rng.IntN(300_000)
		want := feed(t, NewAssembler(mode, limit), in, chunk)
		got := feedDirect(t, NewAssembler(mode, limit), in, chunk, rng.IntN(4))
		direct += got.direct
		spilled += got.spilled
		if len(got.msgs) != len(want.msgs) {
			t.Fatalf("iteration %d: %d messages, copying reader %d", iter, len(got.msgs), len(want.msgs))
		}
		for i := range want.msgs {
			if !bytes.Equal(got.msgs[i], want.msgs[i]) || got.ends[i] != want.ends[i] {
				t.Fatalf("iteration %d: message %d differs", iter, i)
			}
		}
		var e1, e2 *Error
		switch {
		case errors.As(want.err, &e1):
			if !errors.As(got.err, &e2) || *e1 != *e2 {
				t.Fatalf("iteration %d: end %v, copying reader %v", iter, got.err, want.err)
			}
		case got.err != want.err:
			t.Fatalf("iteration %d: end %v, copying reader %v", iter, got.err, want.err)
		}
	}
}

// TestTruncatedAfterFilled: a stream that ends right after whole packets
// read through Plan, with no Next between, is reported as a copying
// reader's is: a truncated stream, not a packet that was never cut.
func TestTruncatedAfterFilled(t *testing.T) {
	var in []byte
	for range 5 {
		in = AppendData(in, bytes.Repeat([]byte{'x'}, MaxPayloadSize))
	}
	first, upto := 2*MaxPacketSize+HeaderSize+100, 4*MaxPacketSize
	a := NewAssembler(SimpleIPC, 0)
	if _, _, _, err := a.Next(in[:first]); err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, p := range a.Plan(1) {
		got += copy(p, in[first+got:upto])
	}
	if spill := a.Filled(got); len(spill) != 0 {
		t.Fatalf("%d bytes spilled from whole packets", len(spill))
	}
	b := NewAssembler(SimpleIPC, 0)
	for p := in[:upto]; ; {
		_, n, _, err := b.Next(p)
		if err != nil {
			t.Fatal(err)
		}
		if p = p[n:]; n == 0 {
			break
		}
	}
	if ga, gb := a.Truncated(0), b.Truncated(0); ga.Error() != gb.Error() {
		t.Fatalf("after Filled: %v; copying reader: %v", ga, gb)
	}
}
