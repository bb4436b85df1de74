//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"errors"
	"testing"
	"time"
)

// TestReaderPrefetchRange: Reader.Prefetch asks only for lines of the data area that
// the record at the head announces, whatever its header says, and changes
// nothing Next sees.
func TestReaderPrefetchRange(t *testing.T) {
	checkLeaks(t)
	const capacity = 64 << 10
	w, r := newPair(t, capacity, nil)
	if _, _, ok := r.prefetchRange(); ok {
		t.Fatal("empty ring: a range to prefetch")
	}
	r.Prefetch() // nothing published: a no-op

	msg := make([]byte, 4000)
	for i := range msg {
		msg[i] = byte(i)
	}
	if err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	start, end, ok := r.prefetchRange()
	if !ok || start != 64 || end != recordHeader+4000 {
		t.Fatalf("4000-byte record at 0: range %d-%d (%v), want 64-%d", start, end, ok, recordHeader+4000)
	}
	r.Prefetch()
	p, _, err := r.Next()
	if err != nil || len(p) != len(msg) || p[3999] != msg[3999] {
		t.Fatalf("Next after Prefetch: %d bytes, %v", len(p), err)
	}
	if _, _, ok := r.prefetchRange(); ok {
		t.Fatal("range while a lease is held")
	}
	r.Prefetch() // with a lease: a no-op
	r.Release()

	// A header that announces more than the area holds, near its end:
	// the range stops at the end of the area.
	at := r.head + capacity - 512 - r.head&r.s.mask
	r.head = at // as if the records before had been read
	putRecord(r.s, at, 1<<30, 0)
	start, end, ok = r.prefetchRange()
	if !ok || start < at&r.s.mask || end != capacity {
		t.Fatalf("oversized header at %d: range %d-%d (%v), want it to end at %d", at&r.s.mask, start, end, ok, capacity)
	}
	r.Prefetch()

	// The same in the middle of the area: the range stops at readPrefetchMax.
	at += 1024
	at -= at & r.s.mask // the start of the next lap
	at += 4096
	r.head = at
	putRecord(r.s, at, 1<<30, 0)
	if start, end, ok = r.prefetchRange(); !ok || end-start > readPrefetchMax || end > capacity {
		t.Fatalf("oversized header at 4096: range %d-%d (%v)", start, end, ok)
	}
	r.Prefetch()
	var ce *CorruptError
	if _, _, err := r.Next(); !errors.As(err, &ce) {
		t.Fatalf("Next on the oversized header: %v, want a CorruptError", err)
	}
	if _, _, ok := r.prefetchRange(); ok {
		t.Fatal("a corrupt ring still reports a range")
	}
	r.Prefetch() // after the corruption: a no-op
}

// TestPrefetchOption: with Options.Prefetch, a Spin or Sleep that ends
// with a record asks for it and returns as without; on a header that
// announces more than the area holds it touches nothing outside the
// mapping, and Next then reports the corruption.
func TestPrefetchOption(t *testing.T) {
	checkLeaks(t)
	for _, how := range []string{"spin", "sleep"} {
		t.Run(how, func(t *testing.T) {
			const capacity = 64 << 10
			w, r := newPair(t, capacity, &Options{Prefetch: true})
			if !r.prefetch {
				t.Fatal("Options.Prefetch not taken")
			}
			wait := func() bool {
				if how == "spin" {
					return r.Spin()
				}
				return r.Sleep(time.Second)
			}
			msg := make([]byte, 3000)
			msg[2999] = 7
			if err := w.Write(msg); err != nil {
				t.Fatal(err)
			}
			if !wait() {
				t.Fatal("no record after a wait")
			}
			p, _, err := r.Next()
			if err != nil || len(p) != len(msg) || p[2999] != 7 {
				t.Fatalf("Next after the wait: %d bytes, %v", len(p), err)
			}
			r.Release()

			at := r.head + capacity - 256 - r.head&r.s.mask
			r.head = at // as if the records before had been read
			putRecord(r.s, at, 1<<30, 0)
			if !wait() {
				t.Fatal("a wait on a published (oversized) header reports nothing")
			}
			var ce *CorruptError
			if _, _, err := r.Next(); !errors.As(err, &ce) {
				t.Fatalf("Next on the oversized header: %v, want a CorruptError", err)
			}
		})
	}
}
