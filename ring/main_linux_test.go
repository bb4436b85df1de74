//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// childEnv selects what a re-executed test binary does instead of testing.
const childEnv = "PKTIPC_RING_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	leakcheck.VerifyTestMain(m)
}

// checkLeaks fails the test at cleanup if it left a ring mapping, a
// descriptor or a goroutine behind.
func checkLeaks(t testing.TB) {
	t.Helper()
	leakcheck.Check(t)
	checkMappings(t)
}

// ringMappings counts this process's mappings of ring memfds.
func ringMappings(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "memfd:pktipc-ring")
}

// checkMappings fails the test at cleanup if it left ring mappings behind.
func checkMappings(t testing.TB) {
	t.Helper()
	before := ringMappings(t)
	t.Cleanup(func() {
		if after := ringMappings(t); after != before {
			t.Errorf("ring mappings: %d before the test, %d after", before, after)
		}
	})
}

// newPair makes a ring of the given capacity and maps both sides of it.
// The memfd is closed at once (mappings outlive it); both sides are closed
// at cleanup. Tests that use it start with checkLeaks.
func newPair(t testing.TB, capacity int, opts *Options) (*Writer, *Reader) {
	t.Helper()
	f, err := Create(capacity)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(f, opts)
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Close()
		r.Close()
	})
	return w, r
}

// heapRing views ordinary memory as a ring, for tests that corrupt it at
// will or count unmaps. unmapped counts calls of its unmap function.
func heapRing(capacity int) (mem []byte, s *shared, unmapped *atomic.Int32) {
	mem = make([]byte, headerSize+capacity)
	initHeader(mem, uint64(capacity))
	n := new(atomic.Int32)
	s = newShared(mem, func([]byte) error { n.Add(1); return nil })
	return mem, s, n
}

// putRecord writes, as a writer would publish it, the header of a record
// of n bytes with flags at position pos of s's data area.
func putRecord(s *shared, pos uint64, n, flags uint32) {
	word64(s.data, pos&s.mask).Store(packRecord(n, flags|seal(pos, s.shift)))
}
