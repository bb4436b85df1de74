//go:build !race

package bench

import (
	"context"
	"strconv"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// engineEcho runs the pktipc server role in this process (inline handlers)
// and returns its socket; the server stops at cleanup.
func engineEcho(tb testing.TB, scenario Kind) string {
	tb.Helper()
	path := testEnv(tb).TempPath("s")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	cfg := serverConfig{Socket: path, Scenario: scenario}
	go func() { done <- serveEngine(ctx, cfg, engineSettings{}, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	return path
}

// The pktipc peer's measuring loop must not allocate: its round trip and
// its stream sends are zero-allocation in steady state.
func TestEngineClientDoesNotAllocate(t *testing.T) {
	leakcheck.Check(t)
	rt, err := dialEngine(context.Background(), engineEcho(t, PingPong))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	req := patternPayload(4096)
	ctx := context.Background()
	if n := testing.AllocsPerRun(200, func() {
		if _, err := rt.RoundTrip(ctx, req); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("pktipc RoundTrip allocates %v times", n)
	}

	st, err := openEngineStream(ctx, engineEcho(t, Stream), 512)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msg := patternPayload(512)
	if n := testing.AllocsPerRun(20*engineStreamWin, func() {
		if err := st.Send(msg); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("pktipc stream Send allocates %v times", n)
	}
	if err := st.Finish(ctx); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkEngineRoundTrip(b *testing.B) {
	for _, size := range []int{64, 4096, 70000} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			rt, err := dialEngine(context.Background(), engineEcho(b, PingPong))
			if err != nil {
				b.Fatal(err)
			}
			defer rt.Close()
			req := patternPayload(size)
			ctx := context.Background()
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rt.RoundTrip(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// git's shape: one connection per request.
func BenchmarkEngineOneShot(b *testing.B) {
	rt, _ := dialOneShot(context.Background(), engineEcho(b, Connect))
	req := patternPayload(64)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rt.RoundTrip(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
