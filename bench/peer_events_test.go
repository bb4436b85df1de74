package bench

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/events"
	"github.com/pktipc/pktipc/frame"
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
// stream, whatever the others still send. The server here is a slow one of
// the test's own, which notes how many messages of a connection it had read
// when it acknowledged; a Finish that returned before the acknowledgement,
// or took another reply for it, sees no note or a short count.
func TestEventsStreamFinish(t *testing.T) {
	leakcheck.Check(t)
	if runtime.GOOS != "linux" {
		t.Skip("package events runs on Linux only")
	}
	path := testEnv(t).TempPath("s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	const streams = 3
	// acked[i] receives the count of messages the server had read on the
	// i-th connection it accepted when it acknowledged that connection.
	var acked [streams]chan int
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	for i := range acked {
		acked[i] = make(chan int, 1)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range streams {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := frame.NewReader(c, frame.Persistent, MaxSize)
				for n := 0; ; n++ {
					msg, err := r.ReadMessage()
					if err != nil {
						return
					}
					if len(msg) == 0 {
						acked[i] <- n
						if _, err := c.Write(frame.AppendFlush(nil)); err != nil {
							return
						}
						continue
					}
					time.Sleep(time.Millisecond) // a slow reader
				}
			}()
		}
	}()
	ctx := context.Background()
	var ss [streams]Streamer
	for i := range ss {
		// Connect one at a time, so that the i-th accepted is ss[i].
		s, err := openEventsStream(ctx, path, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.(eventsStream).RoundTrip(ctx, nil); err != nil {
			t.Fatalf("stream %d: first acknowledgement: %v", i, err)
		}
		if n := <-acked[i]; n != 0 {
			t.Fatalf("stream %d: first acknowledgement after %d messages", i, n)
		}
		ss[i] = s
	}
	msg := patternPayload(64 << 10)
	for i, s := range ss {
		for range 20 * (i + 1) {
			if err := s.Send(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := streams - 1; i >= 0; i-- {
		if err := ss[i].Finish(ctx); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		select {
		case n := <-acked[i]:
			// The count includes the first, empty message.
			if want := 20*(i+1) + 1; n != want {
				t.Errorf("stream %d: Finish returned after an acknowledgement of %d messages, want %d", i, n, want)
			}
		default:
			t.Errorf("stream %d: Finish returned before the server acknowledged", i)
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
