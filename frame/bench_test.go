package frame

import (
	"fmt"
	"io"
	"testing"
)

// benchSizes are the message sizes of every benchmark: one small packet, one
// page, one just over a maximal packet (two packets), and 1 MiB (17 packets).
var benchSizes = []struct {
	name string
	n    int
}{
	{"size=64", 64}, {"size=4096", 4 << 10}, {"size=65536", 64 << 10}, {"size=1048576", 1 << 20},
}

// BenchmarkDecode walks an encoded message packet by packet: headers only,
// payloads stay in place.
func BenchmarkDecode(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			in := AppendMessage(nil, patterned(s.n))
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				for p := in; ; {
					k, _, n, err := Decode(p)
					if err != nil {
						b.Fatal(err)
					}
					if k == Flush {
						break
					}
					p = p[n:]
				}
			}
		})
	}
}

// BenchmarkDecodeNeedMore is the answer to a lone 4-byte header, the shape
// of git's two-writes-per-packet traffic.
func BenchmarkDecodeNeedMore(b *testing.B) {
	in := []byte("fff0")
	b.ReportAllocs()
	for b.Loop() {
		if k, _, _, _ := Decode(in); k != NeedMore {
			b.Fatal(k)
		}
	}
}

// BenchmarkAssembler assembles a fully buffered message: zero-copy for one
// packet, one copy into the reused buffer for more.
func BenchmarkAssembler(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			in := AppendMessage(nil, patterned(s.n))
			a := NewAssembler(SimpleIPC, 0)
			a.Next(in) // grows the reused buffer before timing
			b.ReportAllocs()
			b.SetBytes(int64(s.n))
			for b.Loop() {
				msg, _, done, err := a.Next(in)
				if err != nil || !done || len(msg) != s.n {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAssemblerPieces feeds the message in 16 KiB reads, as a socket
// would deliver it, with absorbing for large messages.
func BenchmarkAssemblerPieces(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			in := AppendMessage(nil, patterned(s.n))
			a := NewAssembler(SimpleIPC, 0)
			buf := make([]byte, 0, MinReadBuffer)
			a.Next(in) // grows the reused buffer before timing
			b.ReportAllocs()
			b.SetBytes(int64(s.n))
			for b.Loop() {
				buf = buf[:0]
				for src := in; ; {
					take := min(len(src), 16<<10, cap(buf)-len(buf))
					buf = append(buf, src[:take]...)
					src = src[take:]
					_, n, done, err := a.Next(buf)
					if err != nil {
						b.Fatal(err)
					}
					buf = buf[:copy(buf, buf[n:])]
					if done {
						break
					}
				}
			}
		})
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			msg := patterned(s.n)
			dst := make([]byte, 0, EncodedLen(s.n))
			b.ReportAllocs()
			b.SetBytes(int64(s.n))
			for b.Loop() {
				dst = AppendMessage(dst[:0], msg)
			}
		})
	}
}

// BenchmarkReader reads messages from an in-memory stream through the
// blocking Reader (so it includes copying from the source into the buffer).
func BenchmarkReader(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			r := NewReader(&loopReader{b: AppendMessage(nil, patterned(s.n))}, SimpleIPC, 0)
			r.ReadMessage() // grows the reused buffers before timing
			b.ReportAllocs()
			b.SetBytes(int64(s.n))
			for b.Loop() {
				if m, err := r.ReadMessage(); err != nil || len(m) != s.n {
					b.Fatal(len(m), err)
				}
			}
		})
	}
}

func BenchmarkWriter(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			w := NewWriter(io.Discard)
			msg := patterned(s.n)
			w.WriteMessage(msg) // grows the reused buffer before timing
			b.ReportAllocs()
			b.SetBytes(int64(s.n))
			for b.Loop() {
				if err := w.WriteMessage(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeLibIPC(b *testing.B) {
	for _, n := range []int{64, 4 << 10, LibIPCMaxPayload} {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			in, _ := AppendLibIPC(nil, patterned(n))
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, m, err := DecodeLibIPC(in, 0); m != len(in) || err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
