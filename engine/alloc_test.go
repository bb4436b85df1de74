//go:build !race

package engine

import (
	"bytes"
	"context"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestZeroAllocsPerRequest: in steady state a persistent round trip
// allocates nothing, on the client and (inline handlers) on the server.
// testing.AllocsPerRun counts the whole process, so both sides are covered.
func TestZeroAllocsPerRequest(t *testing.T) {
	leakcheck.Check(t)
	for _, size := range []int{64, 4096, 100_000} {
		ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(true))
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		req := bytes.Repeat([]byte("a"), size)
		for range 100 { // warm the buffers and pools
			if _, err := c.Call(req); err != nil {
				t.Fatal(err)
			}
		}
		allocs := testing.AllocsPerRun(1000, func() {
			if _, err := c.Call(req); err != nil {
				t.Fatal(err)
			}
		})
		c.Close()
		if allocs != 0 {
			t.Errorf("size %d: %v allocations per round trip, want 0", size, allocs)
		}
	}
}
