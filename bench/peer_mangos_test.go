package bench

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// startMangos runs the mangos server role in this process for scenario and
// returns its socket path; the server stops at the test's cleanup.
func startMangos(t *testing.T, scenario Kind) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- serveMangos(ctx, serverConfig{Socket: path, Scenario: scenario}, noSettings{}, func() { close(ready) })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-errc:
		errc <- err
		t.Fatalf("server did not start: %v", err)
	}
	return path
}

// The receive limit is raised: the largest payload a Selection allows goes
// both ways.
func TestMangosLargestMessage(t *testing.T) {
	leakcheck.Check(t)
	path := startMangos(t, PingPong)
	rt, err := dialMangos(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for _, size := range []int{1, MaxSize} {
		if n, err := rt.RoundTrip(context.Background(), patternPayload(size)); err != nil || n != size {
			t.Errorf("round trip of %d bytes: %d, %v", size, n, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
	defer cancel()
	if _, err := rt.RoundTrip(ctx, []byte("x")); err == nil {
		t.Error("round trip under an expired context succeeded")
	}
}

// Finish returns only once the server has read every message of its own
// stream, whatever the others still send.
func TestMangosStreamFinish(t *testing.T) {
	leakcheck.Check(t)
	path := startMangos(t, Stream)
	ctx := context.Background()
	var streams [3]Streamer
	for i := range streams {
		s, err := openMangosStream(ctx, path, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		streams[i] = s
	}
	msg := patternPayload(64 << 10)
	for i, s := range streams {
		for range 50 * (i + 1) {
			if err := s.Send(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := len(streams) - 1; i >= 0; i-- {
		if err := streams[i].Finish(ctx); err != nil {
			t.Errorf("stream %d: %v", i, err)
		}
	}
}
