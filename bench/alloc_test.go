//go:build !race

package bench

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// The measuring loop must not allocate per operation: allocations would show
// up as client CPU and GC pauses in every peer's numbers.
func TestSamplerDoesNotAllocate(t *testing.T) {
	s := NewRecorder(1).Sampler(0)
	if n := testing.AllocsPerRun(10*flushEvery, func() { s.Record(12345) }); n != 0 {
		t.Errorf("Sampler.Record allocates %v times", n)
	}
}

// echoPair returns a client connection of the unix peer to an in-process
// echo server; stop closes both and waits for the server.
func echoPair(t testing.TB) (*unixConn, func()) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		defer c.Close()
		r, w := frame.NewReader(c, frame.Persistent, 0), frame.NewWriter(c)
		for {
			msg, err := r.ReadMessage()
			if err != nil || w.WriteMessage(msg) != nil {
				return
			}
		}
	}()
	uc, err := dialUnixConn(context.Background(), path)
	if err != nil {
		l.Close()
		<-done
		t.Fatal(err)
	}
	return uc, func() {
		uc.Close()
		<-done
	}
}

func TestUnixRoundTripDoesNotAllocate(t *testing.T) {
	leakcheck.Check(t)
	uc, stop := echoPair(t)
	defer stop()
	req := patternPayload(4096)
	ctx := context.Background()
	if n := testing.AllocsPerRun(200, func() {
		if _, err := uc.RoundTrip(ctx, req); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("unix RoundTrip allocates %v times", n)
	}
}

func BenchmarkUnixRoundTrip(b *testing.B) {
	for _, size := range []int{64, 4096, 70000} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			uc, stop := echoPair(b)
			defer stop()
			req := patternPayload(size)
			ctx := context.Background()
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := uc.RoundTrip(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
