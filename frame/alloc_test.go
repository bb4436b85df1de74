//go:build !race

package frame

import (
	"io"
	"testing"
)

// Zero allocations per message in steady state (the race detector
// allocates, hence the build tag).

func TestDecodeNoAlloc(t *testing.T) {
	msg := AppendMessage(nil, patterned(200000))
	short := msg[:3]
	partial := msg[:100]
	if n := testing.AllocsPerRun(100, func() {
		for p := msg; ; {
			k, _, m, err := Decode(p)
			if err != nil || k == Flush {
				break
			}
			p = p[m:]
		}
		Decode(short)
		Decode(partial)
	}); n != 0 {
		t.Fatalf("Decode allocates %v times per run", n)
	}
}

func TestAssemblerNoAlloc(t *testing.T) {
	for _, size := range []int{0, 64, 4096, MaxPayloadSize, MaxPayloadSize + 1, 1 << 20} {
		for _, mode := range []Mode{SimpleIPC, Persistent} {
			in := AppendMessage(nil, patterned(size))
			in = AppendMessage(in, patterned(size/2))
			a := NewAssembler(mode, 0)
			run := func() {
				b := in
				for b2 := 0; b2 < 2; b2++ {
					msg, n, done, err := a.Next(b)
					if err != nil || !done || len(msg) != []int{size, size / 2}[b2] {
						t.Fatalf("Next: %v %v", done, err)
					}
					b = b[n:]
				}
			}
			run() // warm-up: grows the assembly buffer once
			if n := testing.AllocsPerRun(50, run); n != 0 {
				t.Errorf("size %d %v: %v allocations per run", size, mode, n)
			}
		}
	}
	// Piecewise arrival, including absorbing a large message.
	in := AppendMessage(nil, patterned(500000))
	a := NewAssembler(SimpleIPC, 0)
	buf := make([]byte, 0, MinReadBuffer)
	run := func() {
		buf = buf[:0]
		src := in
		for {
			take := min(len(src), 9000, cap(buf)-len(buf))
			buf = append(buf, src[:take]...)
			src = src[take:]
			msg, n, done, err := a.Next(buf)
			if err != nil {
				t.Fatal(err)
			}
			buf = buf[:copy(buf, buf[n:])]
			if done {
				if len(msg) != 500000 {
					t.Fatalf("got %d bytes", len(msg))
				}
				return
			}
		}
	}
	run()
	if n := testing.AllocsPerRun(20, run); n != 0 {
		t.Errorf("piecewise: %v allocations per run", n)
	}
}

func TestAppendNoAlloc(t *testing.T) {
	msg := patterned(1 << 20)
	dst := make([]byte, 0, EncodedLen(len(msg)))
	if n := testing.AllocsPerRun(50, func() {
		dst = AppendMessage(dst[:0], msg)
		dst = AppendData(dst[:0], msg[:1000])
		dst, _ = AppendPacket(dst[:0], msg[:100])
		dst, _ = AppendHeader(dst, 100)
		dst = AppendFlush(dst)
	}); n != 0 {
		t.Fatalf("encoding allocates %v times per run", n)
	}
}

func TestLibIPCNoAlloc(t *testing.T) {
	z, _ := AppendLibIPC(nil, patterned(LibIPCMaxPayload))
	c, _ := AppendLibIPCC(nil, CFrame{Type: CData, UserType: 9, Payload: patterned(100000)})
	dst := make([]byte, 0, len(c))
	if n := testing.AllocsPerRun(100, func() {
		DecodeLibIPC(z, 0)
		DecodeLibIPC(z[:10], 0)
		DecodeLibIPCC(c)
		DecodeLibIPCC(c[:3])
		dst, _ = AppendLibIPC(dst[:0], z[4:])
		dst, _ = AppendLibIPCC(dst[:0], CFrame{Type: CData, Payload: c[6:]})
	}); n != 0 {
		t.Fatalf("LibIPC codecs allocate %v times per run", n)
	}
}

func TestStreamNoAlloc(t *testing.T) {
	for _, size := range []int{64, 100000} {
		in := AppendMessage(nil, patterned(size))
		r := NewReader(&loopReader{b: in}, SimpleIPC, 0)
		r.ReadMessage()
		if n := testing.AllocsPerRun(50, func() {
			if m, err := r.ReadMessage(); err != nil || len(m) != size {
				t.Fatalf("ReadMessage: %d %v", len(m), err)
			}
		}); n != 0 {
			t.Errorf("size %d: ReadMessage allocates %v times", size, n)
		}
		w := NewWriter(io.Discard)
		w.WriteMessage(in)
		msg := patterned(size)
		if n := testing.AllocsPerRun(50, func() { w.WriteMessage(msg) }); n != 0 {
			t.Errorf("size %d: WriteMessage allocates %v times", size, n)
		}
	}
	r := NewReader(&loopReader{b: []byte("0008ping")}, SimpleIPC, 0)
	if n := testing.AllocsPerRun(50, func() { r.ReadPacket() }); n != 0 {
		t.Errorf("ReadPacket allocates %v times", n)
	}
}
