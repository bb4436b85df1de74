//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package engine

import (
	"context"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestLastLevelCache: on Linux the size comes from sysfs, where it is
// there to read.
func TestLastLevelCache(t *testing.T) {
	n, err := lastLevelCache()
	if err != nil {
		t.Skipf("no cache size in sysfs here: %v", err)
	}
	if n < 64<<10 || n > 1<<32 {
		t.Fatalf("last-level cache of %d bytes", n)
	}
}

// TestRingsCachedCopies: messages larger than a copy piece go through
// rings large enough to hold them in one record, copied in pieces both
// ways (request and reply in place), and come back whole; the Client
// counts itself in ringClients while its rings are mapped, also when
// Close comes from another goroutine.
func TestRingsCachedCopies(t *testing.T) {
	leakcheck.Check(t)
	forceCacheBudget(t, 1<<40)
	before := ringClients.Load()
	ts := startServer(t, HandlerFunc(echoRaw), WithRingLimits(4, 8<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, ts.path, WithRings(8<<20), WithRingRepliesInPlace())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Rings() {
		t.Fatal("no rings")
	}
	if got := ringClients.Load(); got != before+1 {
		t.Fatalf("ringClients %d with rings mapped, want %d", got, before+1)
	}
	callEcho(t, c, copyPiece+1, 3*copyPiece+7, 2<<20)
	done := make(chan struct{})
	go func() { // Close from another goroutine, the owner idle
		defer close(done)
		c.Close()
	}()
	<-done
	if got := ringClients.Load(); got != before {
		t.Fatalf("ringClients %d after Close, want %d", got, before)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
}
