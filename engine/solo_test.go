package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// parked counts the server's loops in a solo wait.
func parked(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.loops {
		if l.parked.Load() {
			n++
		}
	}
	return n
}

// parkOn makes round trips until the server's loop waits on its connection
// alone. One round trip is not always enough: a loop does not start a solo
// wait while the accept loop is still between its enroll and the return.
func parkOn(t *testing.T, s *Server, roundTrip func()) {
	t.Helper()
	waitFor(t, func() bool {
		if parked(s) == 1 {
			return true
		}
		roundTrip()
		return false
	})
}

// TestSoloWaitServes: a loop with one persistent connection serves it from
// solo waits, for requests larger than the loop's own read buffer too, also
// when it busy-polls first; with WithSoloWait(false) it never waits.
func TestSoloWaitServes(t *testing.T) {
	leakcheck.Check(t)
	for _, tc := range []struct {
		on   bool
		spin time.Duration
	}{{true, 0}, {false, 0}, {true, time.Millisecond}} {
		on := tc.on
		ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(true), WithEventLoops(1),
			WithSoloWait(on), WithBusyPoll(tc.spin))
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		for i, size := range []int{64, 4096, 3 * soloReadBuffer, 1, 70_000, 64} {
			req := bytes.Repeat([]byte{byte('a' + i)}, size)
			for range 20 {
				got, err := c.Call(req)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, req) {
					t.Fatalf("solo %v, size %d: reply of %d bytes differs", on, size, len(got))
				}
			}
		}
		c.Close()
		waitFor(t, func() bool { return ts.openConns() == 0 })
		reads := ts.Stats().SoloReads
		if on && reads == 0 {
			t.Error("no request was read in a solo wait")
		}
		if !on && reads != 0 {
			t.Errorf("WithSoloWait(false): %d solo reads", reads)
		}
	}
}

// rawPersistent opens a raw connection and does the persistent handshake.
func rawPersistent(t *testing.T, path string) io.ReadWriter {
	t.Helper()
	c := dialRaw(t, path)
	if _, err := c.Write(frame.AppendMessage(nil, helloRequest)); err != nil {
		t.Fatal(err)
	}
	readExactly(t, c, helloWire)
	return c
}

func readExactly(t *testing.T, r io.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read %d bytes: %v", len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestSoloWaitPartialAndPipelined: bytes a solo wait reads but cannot serve
// yet (a request that trickles in, requests pipelined behind a pooled one)
// are kept and served in order, joined with what gnet reads later.
func TestSoloWaitPartialAndPipelined(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if bytes.HasPrefix(req, []byte("slow")) {
			time.Sleep(20 * time.Millisecond)
		}
		return echoRaw(ctx, req, w)
	})
	filter := func(req []byte) bool { return !bytes.HasPrefix(req, []byte("slow")) }
	ts := startServer(t, h, WithEventLoops(1), WithInlineFilter(filter))
	c := rawPersistent(t, ts.path)
	roundTrip := func(reqs ...string) {
		t.Helper()
		var wire, want []byte
		for _, r := range reqs {
			wire = frame.AppendMessage(wire, []byte(r))
			want = frame.AppendMessage(want, []byte(r))
		}
		if _, err := c.Write(wire); err != nil {
			t.Fatal(err)
		}
		readExactly(t, c, want)
	}
	park := func() { roundTrip("park") }
	parkOn(t, ts.Server, park)

	// One request, a byte at a time: the solo wait reads its first byte.
	msg := frame.AppendMessage(nil, []byte("trickled"))
	for i := range msg {
		if _, err := c.Write(msg[i : i+1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	readExactly(t, c, msg)

	// A request of several packets, in chunks: the assembler absorbs the
	// first packets from the pending bytes while the rest still comes in.
	parkOn(t, ts.Server, park)
	big := make([]byte, 300_000)
	for i := range big {
		big[i] = byte(i % 251)
	}
	msg = frame.AppendMessage(nil, big)
	for i := 0; i < len(msg); i += 20_000 {
		if _, err := c.Write(msg[i:min(i+20_000, len(msg))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	readExactly(t, c, msg)

	// Three requests in one write, the middle one pooled: the third waits
	// in the loop's pending bytes while a worker answers the second.
	parkOn(t, ts.Server, park) // that reply outgrew the socket buffer: gnet sent its rest
	roundTrip("a", "slow b", "c")
	parkOn(t, ts.Server, park) // a pooled reply's end does not start a solo wait
	roundTrip(strings.Repeat("x", 60_000), "slow", strings.Repeat("y", 60_000), "z")
	if ts.Stats().SoloReads == 0 {
		t.Error("no request was read in a solo wait")
	}
}

// TestSoloWaitWakes: a loop in a solo wait lets a new connection in and lets
// the server stop, with the reaper's periodic wake-up turned off (without
// the enroll wake-up the second client would wait for the first to send).
func TestSoloWaitWakes(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	s, err := NewServer(path, HandlerFunc(echoRaw), WithInlineHandlers(true), WithEventLoops(1))
	if err != nil {
		t.Fatal(err)
	}
	quietReaper(s)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background()) }()
	defer func() {
		_ = s.Close()
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	}()
	a, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	park := func() {
		if _, err := a.Call([]byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	parkOn(t, s, park)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := Dial(ctx, path)
		cancel()
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if err := b.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		req := fmt.Appendf(nil, "b%d", i)
		if got, err := b.Call(req); err != nil || !bytes.Equal(got, req) {
			t.Fatalf("client %d: %q, %v", i, got, err)
		}
		b.Close()
		waitFor(t, func() bool { return s.openConns() == 1 })
		parkOn(t, s, park)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a loop in a solo wait: %v", err)
	}
}

// TestSoloWaitPeerLeaves: a peer that closes while the loop waits on it is
// closed on the server too.
func TestSoloWaitPeerLeaves(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(true), WithEventLoops(1))
	for range 3 {
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		parkOn(t, ts.Server, func() {
			if _, err := c.Call([]byte("x")); err != nil {
				t.Fatal(err)
			}
		})
		c.Close()
		waitFor(t, func() bool { return ts.openConns() == 0 && parked(ts.Server) == 0 })
	}
}
