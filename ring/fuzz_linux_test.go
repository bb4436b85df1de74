//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
)

// typedRingError reports whether err is nil or one this package documents.
func typedRingError(err error) bool {
	switch {
	case err == nil, err == io.EOF, err == io.ErrUnexpectedEOF,
		errors.Is(err, ErrTimeout), errors.Is(err, ErrCorrupt), errors.Is(err, ErrPeerClosed),
		errors.Is(err, ErrBrokenMessage), errors.Is(err, ErrTooLarge), errors.Is(err, ErrClosed):
		return true
	}
	return false
}

// FuzzReader fills a ring's data area with arbitrary bytes, starts the
// reader at an arbitrary head, sets the writer's closed flag or not, and
// reads the ring dry: no panic, no out-of-bounds access, no wait past the
// deadline, only typed errors, and every message within the limit.
func FuzzReader(f *testing.F) {
	const shift = 12 // MinCapacity
	rec := func(pos uint64, n uint32, flags uint32, payload string) []byte {
		b := binary.LittleEndian.AppendUint64(nil, packRecord(n, flags|seal(pos, shift)))
		b = append(b, payload...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
		return b
	}
	f.Add(rec(0, 5, 0, "hello"), uint64(0), uint32(0))
	f.Add(append(rec(0, 3, flagMore, "abc"), rec(16, 3, 0, "def")...), uint64(0), uint32(closedWriter))
	f.Add(rec(0, 0, flagPad, ""), uint64(0), uint32(0))
	f.Add(rec(0, 100, 0, "short"), uint64(0), uint32(0))
	f.Add(rec(0, 1, 7, "x"), uint64(0), uint32(0))
	f.Add(rec(1<<shift, 5, 0, "lap 1"), uint64(0), uint32(0)) // sealed for the next lap
	// Padding at the end of lap 0 and a record at the start of lap 1.
	wrap := make([]byte, MinCapacity)
	copy(wrap, rec(1<<shift, 4, 0, "wrap"))
	copy(wrap[MinCapacity-16:], rec(MinCapacity-16, 0, flagPad, ""))
	f.Add(wrap, uint64(MinCapacity-16), uint32(closedWriter))
	f.Fuzz(func(t *testing.T, data []byte, head uint64, closed uint32) {
		_, s, _ := heapRing(MinCapacity)
		copy(s.data, data)
		s.head.Store(head)
		s.closed.Store(closed)
		r, err := newReader(s, &Options{Spin: -1})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || head%recordHeader == 0 {
				t.Fatalf("newReader at head %d: %v", head, err)
			}
			return
		}
		defer r.Close()
		r.SetDeadline(time.Now().Add(-time.Second))
		var buf []byte
		for range 2 * MinCapacity / recordHeader {
			var err error
			start := time.Now()
			buf, err = r.ReadMessage(buf[:0], 1000)
			if time.Since(start) > time.Second {
				t.Fatalf("ReadMessage waited %v past its deadline", time.Since(start))
			}
			if !typedRingError(err) {
				t.Fatalf("untyped error %v", err)
			}
			if len(buf) > 1000 {
				t.Fatalf("message of %d bytes over the 1000-byte limit", len(buf))
			}
			if err != nil && !errors.Is(err, ErrTooLarge) {
				return
			}
		}
		t.Fatal("the reader never ran dry")
	})
}

// FuzzWriter lets the reader-owned header words take arbitrary values
// between writes of arbitrary sizes: no panic, only typed errors, and the
// writer never writes outside the data area (a slice bound would panic).
func FuzzWriter(f *testing.F) {
	f.Add([]byte{1, 200, 3}, uint64(0), uint32(0))
	f.Add([]byte{255, 255, 255, 255}, uint64(MinCapacity), uint32(closedReader))
	f.Add([]byte{0}, ^uint64(0), uint32(0))
	f.Fuzz(func(t *testing.T, sizes []byte, head uint64, closed uint32) {
		_, s, _ := heapRing(MinCapacity)
		w, err := newWriter(s, &Options{Spin: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		w.SetDeadline(time.Now().Add(-time.Second))
		buf := make([]byte, 3*MinCapacity)
		for i, b := range sizes {
			if i == len(sizes)/2 {
				s.head.Store(head)
				s.closed.Store(closed)
			}
			err := w.Write(buf[:int(b)*int(b)/16])
			if !typedRingError(err) {
				t.Fatalf("untyped error %v", err)
			}
			if err == nil && w.tail-w.head > s.capacity {
				t.Fatalf("wrote past the reader's head: tail %d, head %d", w.tail, w.head)
			}
		}
	})
}
