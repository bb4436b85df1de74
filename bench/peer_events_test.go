package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/pktipc/pktipc/events"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// startEvents runs the pktipc-events server role in this process for
// scenario and returns its socket path (in a private directory, as uds
// requires); at the test's cleanup the server stops and its socket must be
// gone.
func startEvents(tb testing.TB, scenario Kind) string {
	tb.Helper()
	if runtime.GOOS != "linux" {
		tb.Skip("package events runs on Linux only")
	}
	path := testEnv(tb).TempPath("s")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- serveEvents(ctx, serverConfig{Socket: path, Scenario: scenario}, noSettings{}, func() { close(ready) })
	}()
	tb.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			tb.Errorf("server: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("socket %s left after the server stopped: %v", path, err)
		}
	})
	select {
	case <-ready:
	case err := <-errc:
		errc <- err
		tb.Fatalf("server did not start: %v", err)
	}
	return path
}

// Echoes come back byte for byte, from one byte to the largest payload a
// Selection allows, across several pkt-lines.
func TestEventsEcho(t *testing.T) {
	leakcheck.Check(t)
	path := startEvents(t, PingPong)
	c, err := newEventsConn(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, size := range []int{1, 64, 70000, MaxSize} {
		req := patternPayload(size)
		req[size-1] = '!' // the end of the message is checked too
		if err := c.loop.Write(c.id, req); err != nil {
			t.Fatalf("write %d bytes: %v", size, err)
		}
		reply, err := c.reply()
		if err != nil || !bytes.Equal(reply, req) {
			t.Fatalf("echo of %d bytes: %d bytes, %v", size, len(reply), err)
		}
	}
	if n, err := c.RoundTrip(context.Background(), []byte("ping")); err != nil || n != 4 {
		t.Fatalf("round trip of 4 bytes: %d, %v", n, err)
	}
}

// Finish returns only once the server has read every message of its own
// stream, whatever the others still send.
func TestEventsStreamFinish(t *testing.T) {
	leakcheck.Check(t)
	path := startEvents(t, Stream)
	ctx := context.Background()
	var streams [3]Streamer
	for i := range streams {
		s, err := openEventsStream(ctx, path, 0)
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

// Close from another goroutine ends a RoundTrip that waits for a reply
// that never comes (the stream server answers only empty messages), as the
// driver's abort needs.
func TestEventsCloseAbortsRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	path := startEvents(t, Stream)
	rt, err := dialEvents(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := rt.RoundTrip(context.Background(), []byte("no answer"))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, events.ErrClosed) {
			t.Errorf("RoundTrip after Close: %v, want events.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RoundTrip still blocked 10 s after Close")
	}
	if err := rt.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// The peer runs as the Runner runs it, its server a child process: every
// scenario it declares, with several clients on the one server Loop.
func TestEventsPeerRuns(t *testing.T) {
	leakcheck.Check(t)
	env := testEnv(t)
	info, ok := Lookup("pktipc-events")
	if !ok || !info.Quick {
		t.Fatalf("pktipc-events: listed %v, quick %v", ok, info.Quick)
	}
	p := info.New()
	if err := p.Prepare(context.Background(), env); errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(WithCounters(false))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Case{{PingPong, 64, 1}, {Concurrency, 64, 4}, {Stream, 512, 2}} {
		run := Run{Case: c, Peer: info.Name, Duration: 100 * time.Millisecond, Warmup: 10 * time.Millisecond}
		rec, err := r.runOne(context.Background(), env, p, run)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		checkRecord(t, &rec)
	}
	if n := childCount(t); n != 0 {
		t.Errorf("%d child processes left", n)
	}
}
