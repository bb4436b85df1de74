package engine

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestOneShotPath: a git-style request that comes whole with its
// connection is served by the accept loop, replies of any size included;
// a slow reader does not hold up the next client; the persistent handshake
// and pooled requests still go to the loops.
func TestOneShotPath(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		switch {
		case strings.HasPrefix(string(req), "big:"):
			_, err := w.Write(bytes.Repeat([]byte("b"), 3<<20))
			return err
		case string(req) == "boom":
			panic("boom")
		case string(req) == "slow":
			time.Sleep(10 * time.Millisecond)
		}
		return echoRaw(ctx, req, w)
	})
	ts := startServer(t, h, WithInlineFilter(func(req []byte) bool { return string(req) != "slow" }))
	for i := range 20 {
		req := []byte(strings.Repeat("x", i*100))
		if got, err := Send(context.Background(), ts.path, req); err != nil || !bytes.Equal(got, req) {
			t.Fatalf("request %d: %d bytes, %v", i, len(got), err)
		}
	}
	if st := ts.Stats(); st.OneShot == 0 {
		t.Fatalf("no request took the git-style path: %+v", st)
	}
	// A request that came in parts went to a loop, which closes its
	// connection a moment after the reply.
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	// A reader that does not read yet: its reply waits in a goroutine of
	// its own, and the accept loop serves the next client meanwhile. (A
	// client starved between its connect and its write, on a loaded
	// machine, comes too late for the accept loop and is served by a
	// loop, where the reply waits as well.)
	served := ts.Stats().Requests
	slow := dialRaw(t, ts.path)
	if _, err := slow.Write(frame.AppendMessage(nil, []byte("big:"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		st := ts.Stats()
		return st.Requests > served && (st.Lingering == 1 || st.Open == 1)
	})
	if st := ts.Stats(); st.Lingering == 0 {
		t.Logf("the slow reader's request came late and went to a loop: %+v", st)
	}
	if got, err := Send(context.Background(), ts.path, []byte("next")); err != nil || string(got) != "next" {
		t.Fatalf("beside a slow reader: %q, %v", got, err)
	}
	got, kind := readAll(t, slow)
	if want := 3<<20 + 4*(3<<20/65516+1) + 4; len(got) != want || kind != kindEOF {
		t.Fatalf("the slow reader got %d bytes (%s), want %d", len(got), kind, want)
	}
	// A panic: no terminator; a pooled request: a worker, on the
	// git-style path too; the handshake: a loop.
	before := ts.Stats().OneShot
	if _, err := Send(context.Background(), ts.path, []byte("boom")); !errors.Is(err, ErrIncompleteReply) {
		t.Fatalf("panicking handler: %v", err)
	}
	if got, err := Send(context.Background(), ts.path, []byte("slow")); err != nil || string(got) != "slow" {
		t.Fatalf("pooled request: %q, %v", got, err)
	}
	c, err := Dial(context.Background(), ts.path)
	if err != nil || !c.Persistent() {
		t.Fatalf("handshake: %v", err)
	}
	c.Close()
	// boom or slow may have come after its connection (then a loop
	// served it).
	if st := ts.Stats(); st.OneShot > before+2 || st.Panics != 1 {
		t.Fatalf("after boom, slow and a handshake: %+v", st)
	}
}

// TestOneShotLingerEndsAtClose: Close does not wait for a reader that never
// reads its reply, whether the accept loop served it (the request came
// with the connection) or a loop did.
func TestOneShotLingerEndsAtClose(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		_, err := w.Write(make([]byte, 2<<20))
		return err
	})
	s, err := NewServer(socketPath(t), h, WithInlineHandlers(true))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	c := dialRaw(t, s.Path())
	if _, err := c.Write(frame.AppendMessage(nil, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { st := s.Stats(); return st.Lingering == 1 || st.Open == 1 && st.Requests == 1 })
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v with a lingering reply", d)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

// TestOneShotRequestInParts: git's client writes its data packets and the
// flush that ends them in separate writes; a request whose flush follows
// within the grace is still served on the git-style path, not handed to a
// loop when the first look finds only the data.
func TestOneShotRequestInParts(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(true))
	const n = 20
	for i := range n {
		c := dialRaw(t, ts.path)
		req, _ := frame.AppendPacket(nil, []byte("part "+strconv.Itoa(i)))
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		// git's client does more between its writes; a timer's sleep
		// would take longer than the grace on a busy machine.
		for start := time.Now(); time.Since(start) < 50*time.Microsecond; {
		}
		if _, err := c.Write(frame.AppendFlush(nil)); err != nil {
			t.Fatal(err)
		}
		got, kind := readAll(t, c)
		if want := string(frame.AppendFlush(req)); string(got) != want || kind != kindEOF {
			t.Fatalf("request %d: %q (%s), want %q", i, got, kind, want)
		}
		c.Close()
	}
	// A loaded machine may delay a client past the grace now and then.
	if st := ts.Stats(); st.OneShot < n*3/4 {
		t.Fatalf("%d of %d requests in parts took the git-style path: %+v", st.OneShot, n, st)
	}
}

// The accept loop keeps the buffer of a large git-style reply while large
// replies come, and not after a run of small ones: it sits outside the
// budget.
func TestOneShotReplyBufferShrinks(t *testing.T) {
	leakcheck.Check(t)
	big := pattern(1<<20, 1)
	ts := startServer(t, HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "big" {
			_, err := w.Write(big)
			return err
		}
		_, err := w.WriteString("small")
		return err
	}), WithInlineHandlers(true))
	// send sends req until the accept loop itself has served it: a request
	// that is not whole when the accept loop looks (a busy machine) goes to
	// an event loop, which does not use the accept loop's buffer.
	send := func(req string) {
		t.Helper()
		for range 100 {
			before := ts.Stats().OneShot
			got, err := Send(context.Background(), ts.path, []byte(req))
			if err != nil || (req == "big") != (len(got) == len(big)) {
				t.Fatalf("%s: %d bytes, %v", req, len(got), err)
			}
			if ts.Stats().OneShot > before {
				return
			}
		}
		t.Fatalf("%s: never served by the accept loop", req)
	}
	send("big")
	send("big")
	for range shotBufSmallRuns {
		send("small")
	}
	ts.Close()
	if n := cap(ts.oneshot.reply.B); n > shotReplyKeep {
		t.Fatalf("the accept loop keeps a reply buffer of %d bytes", n)
	}
}

// A worker's one-shot reply buffer: kept across large replies, dropped
// after a run of small ones.
func TestShotBufKeepsWhileLarge(t *testing.T) {
	var b shotBuf
	b.B = append(b.B, make([]byte, 1<<20)...)
	b.done(1 << 20)
	large := cap(b.B)
	for i := range shotBufSmallRuns - 1 {
		b.B = append(b.B, "small"...)
		b.done(5)
		if cap(b.B) != large {
			t.Fatalf("dropped after %d small replies", i+1)
		}
	}
	b.B = append(b.B[:0], "0000"...) // a large one, sent in parts, starts the count again
	b.done(1 << 20)
	for range shotBufSmallRuns {
		if cap(b.B) <= shotReplyKeep {
			t.Fatal("dropped before a whole run of small replies")
		}
		b.B = append(b.B, "small"...)
		b.done(5)
	}
	if cap(b.B) > shotReplyKeep {
		t.Fatalf("kept %d bytes after %d small replies", cap(b.B), shotBufSmallRuns)
	}
}
