package engine

import (
	"bytes"
	"sync/atomic"
	"testing"
)

// forceCacheBudget sets cacheBudget for the test and restores it after.
func forceCacheBudget(t *testing.T, n int64) {
	cacheBytes() // learnt now, so that it does not overwrite n later
	old := cacheBudget.Swap(n)
	t.Cleanup(func() { cacheBudget.Store(old) })
}

// TestCopyMessage: copyMessage copies what copy copies, in pieces or not,
// whatever the lengths of dst and src.
func TestCopyMessage(t *testing.T) {
	forceCacheBudget(t, 1<<40)
	for _, n := range []int{0, 1, copyPiece, copyPiece + 1, 3*copyPiece + 5} {
		for _, d := range []int{n, n - 1, n + 9, copyPiece + 3} {
			if d < 0 {
				continue
			}
			for _, c := range []int32{1, 1 << 30} {
				var conns atomic.Int32
				conns.Store(c)
				src := pattern(n, n+d)
				want := make([]byte, d)
				wn := copy(want, src)
				got := make([]byte, d)
				if gn := copyMessage(got, src, &conns); gn != wn || !bytes.Equal(got, want) {
					t.Fatalf("%d bytes into %d, %d conns: copied %d (want %d), equal %v", n, d, c, gn, wn, bytes.Equal(got, want))
				}
			}
		}
	}
}

func TestParseCacheSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"32768K\n", 32 << 20}, {"512K", 512 << 10}, {"8M", 8 << 20}, {"1G", 1 << 30}, {"4096", 4096},
	} {
		if got, err := parseCacheSize(c.in); err != nil || got != c.want {
			t.Errorf("parseCacheSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "K", "-1K", "0", "12Q", "99999999999G", "1.5M"} {
		if got, err := parseCacheSize(in); err == nil {
			t.Errorf("parseCacheSize(%q) = %d, want an error", in, got)
		}
	}
}
