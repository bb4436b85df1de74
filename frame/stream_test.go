package frame

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

func readers(b []byte) map[string]io.Reader {
	return map[string]io.Reader{
		"whole":   bytes.NewReader(b),
		"onebyte": iotest.OneByteReader(bytes.NewReader(b)),
		"chunk7":  chunkReader{bytes.NewReader(b), 7},
		"dataerr": iotest.DataErrReader(bytes.NewReader(b)),
	}
}

func TestReaderPackets(t *testing.T) {
	var in []byte
	in, _ = AppendPacket(in, []byte("command=ls-refs\n"))
	in = AppendDelim(in)
	in, _ = AppendPacket(in, []byte("peel\n"))
	in, _ = AppendPacket(in, nil)
	in = AppendResponseEnd(in)
	in, _ = AppendPacket(in, bytes.Repeat([]byte{'z'}, MaxPayloadSize))
	in = AppendFlush(in)
	type pkt struct {
		k Kind
		p string
	}
	wantPkts := []pkt{{Data, "command=ls-refs\n"}, {Delim, ""}, {Data, "peel\n"}, {Data, ""}, {ResponseEnd, ""}, {Data, rep('z', MaxPayloadSize)}, {Flush, ""}}
	for name, src := range readers(in) {
		r := NewReader(src, SimpleIPC, 0)
		for i, w := range wantPkts {
			k, p, err := r.ReadPacket()
			if err != nil || k != w.k || string(p) != w.p {
				t.Fatalf("%s: packet %d = %v %.20q %v, want %v %.20q", name, i, k, p, err, w.k, w.p)
			}
			if k == Data && len(p) > 0 && !within(p, r.buf) {
				t.Fatalf("%s: payload does not alias the Reader's buffer", name)
			}
		}
		for range 2 {
			if _, _, err := r.ReadPacket(); err != io.EOF {
				t.Fatalf("%s: at the end: %v, want io.EOF", name, err)
			}
		}
	}
}

func TestReaderPacketErrors(t *testing.T) {
	for _, c := range []struct {
		in     string
		err    error
		offset int64
		length int
	}{
		{"0008pingzzzz", ErrBadHeader, 8, -1},
		{"00000003", ErrBadLength, 4, 3},
		{"0008pingfff1", ErrTooLong, 8, 65521},
		{"0008ping000", io.ErrUnexpectedEOF, 8, -1},
		{"0008ping000aabc", io.ErrUnexpectedEOF, 8, 10},
	} {
		r := NewReader(iotest.OneByteReader(bytes.NewReader([]byte(c.in))), SimpleIPC, 0)
		var err error
		for err == nil {
			_, _, err = r.ReadPacket()
		}
		var e *Error
		if !errors.As(err, &e) || e.Err != c.err || e.Offset != c.offset || e.Length != c.length {
			t.Errorf("%q: %v, want %v at %d (length %d)", c.in, err, c.err, c.offset, c.length)
		}
		if _, _, again := r.ReadPacket(); again != err {
			t.Errorf("%q: error not sticky: %v", c.in, again)
		}
		if _, again := r.ReadMessage(); again != err {
			t.Errorf("%q: error not sticky for ReadMessage: %v", c.in, again)
		}
	}
}

func TestReaderMessages(t *testing.T) {
	msgs := [][]byte{[]byte("ping"), {}, patterned(1 << 20), []byte("ERR x"), patterned(MaxPayloadSize), patterned(MaxPayloadSize + 1)}
	var in []byte
	for _, m := range msgs {
		in = AppendMessage(in, m)
	}
	for _, mode := range []Mode{SimpleIPC, Persistent} {
		for name, src := range readers(in) {
			if name == "onebyte" {
				src = chunkReader{bytes.NewReader(in), 1000} // a byte at a time is slow under -race
			}
			r := NewReader(src, mode, 0)
			for i, w := range msgs {
				got, err := r.ReadMessage()
				if err != nil || !bytes.Equal(got, w) {
					t.Fatalf("%v/%s: message %d: %d bytes, %v", mode, name, i, len(got), err)
				}
			}
			if _, err := r.ReadMessage(); err != io.EOF {
				t.Fatalf("%v/%s: at the end: %v", mode, name, err)
			}
			if len(r.buf) > MinReadBuffer {
				t.Fatalf("read buffer grew to %d", len(r.buf))
			}
		}
	}
}

func TestReaderMessageErrors(t *testing.T) {
	for _, c := range []struct {
		in     string
		mode   Mode
		err    error
		offset int64
	}{
		{"0008ping00000008ping", SimpleIPC, io.ErrUnexpectedEOF, 20},
		{"0008ping00000008po", SimpleIPC, io.ErrUnexpectedEOF, 12},
		{"0008ping00000008pingzzzz", SimpleIPC, ErrBadHeader, 20},
		{"0008ping000000010000", Persistent, ErrUnexpectedPacket, 12},
		{"0008ping00000003", Persistent, ErrBadLength, 12},
	} {
		r := NewReader(chunkReader{bytes.NewReader([]byte(c.in)), 3}, c.mode, 0)
		if m, err := r.ReadMessage(); err != nil || string(m) != "ping" {
			t.Fatalf("%q: first message %q %v", c.in, m, err)
		}
		m, err := r.ReadMessage()
		var e *Error
		if m != nil || !errors.As(err, &e) || e.Err != c.err || e.Offset != c.offset {
			t.Errorf("%q: %q %v, want %v at %d", c.in, m, err, c.err, c.offset)
		}
	}
	// Packets read one by one, then a message: offsets stay in the stream.
	r := NewReader(bytes.NewReader([]byte("0008ping00000005a0003")), SimpleIPC, 0)
	r.ReadPacket()
	r.ReadPacket()
	_, err := r.ReadMessage()
	var e *Error
	if !errors.As(err, &e) || e.Err != ErrBadLength || e.Offset != 17 {
		t.Fatalf("after ReadPacket: %v, want bad length at 17", err)
	}
	// Read errors pass through and stick.
	boom := errors.New("boom")
	r = NewReader(io.MultiReader(bytes.NewReader([]byte("0008pi")), iotest.ErrReader(boom)), SimpleIPC, 0)
	if _, err := r.ReadMessage(); err != boom {
		t.Fatalf("read error = %v", err)
	}
	if _, _, err := r.ReadPacket(); err != boom {
		t.Fatalf("read error not sticky: %v", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

type badCountReader struct{}

func (badCountReader) Read(p []byte) (int, error) { return len(p) + 1, nil }

func TestReaderMisbehavingSource(t *testing.T) {
	if _, err := NewReader(zeroReader{}, SimpleIPC, 0).ReadMessage(); err != io.ErrNoProgress {
		t.Errorf("zero reads: %v", err)
	}
	if _, _, err := NewReader(badCountReader{}, SimpleIPC, 0).ReadPacket(); err != errInvalidCount {
		t.Errorf("bad count: %v", err)
	}
}

// countWriter records Write calls and accepts at most limit bytes per call
// (0: no limit; negative: nothing).
type countWriter struct {
	bytes.Buffer
	calls int
	limit int
	err   error
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.calls++
	if w.err != nil {
		return 0, w.err
	}
	if w.limit != 0 && len(p) > max(w.limit, 0) {
		p = p[:max(w.limit, 0)]
	}
	return w.Buffer.Write(p)
}

func TestWriter(t *testing.T) {
	cw := &countWriter{}
	w := NewWriter(cw)
	for _, m := range [][]byte{[]byte("ping"), nil, patterned(100000)} {
		before := cw.calls
		if err := w.WriteMessage(m); err != nil {
			t.Fatal(err)
		}
		if cw.calls-before != 1 {
			t.Fatalf("%d Write calls for one message", cw.calls-before)
		}
	}
	want := AppendMessage(AppendMessage(AppendMessage(nil, []byte("ping")), nil), patterned(100000))
	if !bytes.Equal(cw.Bytes(), want) {
		t.Fatalf("Writer output differs from AppendMessage")
	}
	// Short writes without an error are continued.
	cw = &countWriter{limit: 3}
	w = NewWriter(cw)
	if err := w.WriteMessage([]byte("hello world")); err != nil || cw.String() != "000fhello world0000" {
		t.Fatalf("short writes: %q %v", cw.String(), err)
	}
	// Errors stick.
	boom := errors.New("boom")
	cw = &countWriter{err: boom}
	w = NewWriter(cw)
	if err := w.WriteMessage([]byte("x")); err != boom {
		t.Fatalf("write error = %v", err)
	}
	cw.err = nil
	if err := w.WriteMessage([]byte("x")); err != boom || cw.Len() != 0 {
		t.Fatalf("write error not sticky: %v", err)
	}
	// A writer that makes no progress, or lies about its count.
	if err := NewWriter(&countWriter{limit: -1}).WriteMessage([]byte("x")); err != io.ErrShortWrite {
		t.Fatalf("no progress: %v", err)
	}
	if err := NewWriter(lyingWriter{}).WriteMessage([]byte("x")); err != errInvalidCount {
		t.Fatalf("bad count: %v", err)
	}
	// A huge message's buffer is not retained.
	w = NewWriter(io.Discard)
	w.WriteMessage(make([]byte, retainLimit+1))
	if w.buf != nil {
		t.Fatalf("Writer kept a %d-byte buffer", cap(w.buf))
	}
}

type lyingWriter struct{}

func (lyingWriter) Write(p []byte) (int, error) { return len(p) + 1, nil }
