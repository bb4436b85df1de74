//go:build !race

package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestZeroAllocsPerRequest: in steady state a persistent round trip
// allocates nothing, on the client and on the server, with inline handlers
// and with pooled ones (whose replies end through the loop's doorbell).
// testing.AllocsPerRun counts the whole process, so both sides are covered.
func TestZeroAllocsPerRequest(t *testing.T) {
	leakcheck.Check(t)
	for _, tc := range []struct {
		size   int
		inline bool
	}{{64, true}, {4096, true}, {100_000, true}, {64, false}, {4096, false}} {
		size := tc.size
		ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(tc.inline))
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		allocs := callAllocs(t, c, size)
		c.Close()
		if allocs != 0 {
			t.Errorf("size %d, inline %v: %v allocations per round trip, want 0", size, tc.inline, allocs)
		}
	}
}

// callAllocs warms c's buffers (and the server's) with round trips of
// size bytes, then returns the allocations per round trip in the process.
func callAllocs(t *testing.T, c *Client, size int) float64 {
	t.Helper()
	req := bytes.Repeat([]byte("a"), size)
	for range 100 {
		if _, err := c.Call(req); err != nil {
			t.Fatal(err)
		}
	}
	return testing.AllocsPerRun(1000, func() {
		if _, err := c.Call(req); err != nil {
			t.Fatal(err)
		}
	})
}

// TestZeroAllocsPipelined: a window of pipelined requests, answered inline,
// allocates nothing per request either.
func TestZeroAllocsPipelined(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(true))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := bytes.Repeat([]byte("a"), 4096)
	window := func() {
		for range 32 {
			if err := c.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		for range 32 {
			if _, err := c.Recv(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 20 {
		window()
	}
	if allocs := testing.AllocsPerRun(200, window); allocs != 0 {
		t.Errorf("%v allocations per window of 32 requests, want 0", allocs)
	}
}

// TestZeroAllocsBatched: queued requests flushed in one write and
// answered together allocate nothing per request, at 64 B and at 4 KiB:
// inline (replies batched in one write) and pooled (the requests served
// as a batch by one worker).
func TestZeroAllocsBatched(t *testing.T) {
	leakcheck.Check(t)
	for _, inline := range []bool{true, false} {
		ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(inline))
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{64, 4096} {
			req := bytes.Repeat([]byte("b"), size)
			window := func() {
				for range 32 {
					if err := c.Queue(req); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
				for range 32 {
					if _, err := c.Recv(); err != nil {
						t.Fatal(err)
					}
				}
			}
			for range 50 {
				window()
			}
			if allocs := testing.AllocsPerRun(200, window); allocs != 0 {
				t.Errorf("inline %v, size %d: %v allocations per batch of 32 requests, want 0", inline, size, allocs)
			}
			// Posts: their replies are read and dropped before the call's.
			posts := func() {
				for range 32 {
					if err := c.Post(req); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := c.Call(req); err != nil {
					t.Fatal(err)
				}
			}
			for range 20 {
				posts()
			}
			if allocs := testing.AllocsPerRun(200, posts); allocs != 0 {
				t.Errorf("inline %v, size %d: %v allocations per 32 posts and a call, want 0", inline, size, allocs)
			}
		}
		c.Close()
		if st := ts.Stats(); inline && st.Batched == 0 || !inline && st.PoolBatched == 0 {
			t.Errorf("inline %v: no reply batched (%d) and no pooled batch (%d)", inline, st.Batched, st.PoolBatched)
		}
	}
}

// TestStackBuffersStayOnStack: Write, WriteString, Send, Queue and Call
// do not make their arguments escape, so a caller's stack buffer or a
// conversion of a literal costs no allocation (WriteUncopied's does).
func TestStackBuffersStayOnStack(t *testing.T) {
	w := &ReplyWriter{err: errFailedForTest} // returns at once
	c := &Client{}
	c.closed.Store(true) // returns at once
	for name, f := range map[string]func(){
		"Write":       func() { var b [64]byte; b[0] = 1; _, _ = w.Write(b[:]) },
		"WriteString": func() { var b [8]byte; b[0] = 'x'; _, _ = w.WriteString(string(b[:1])) },
		"Send":        func() { _ = c.Send([]byte("command=ping")) },
		"Queue":       func() { _ = c.Queue([]byte("command=ping")) },
		"Call":        func() { _, _ = c.Call([]byte("command=ping")) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations with a stack buffer, want 0", name, n)
		}
	}
}

var errFailedForTest = errors.New("failed")

// TestReplyBuffersSurviveCalibration: bytebufferpool recalibrates what it
// keeps from the lengths it is given back; reply buffers must still be
// reused after that, or every reply allocates (as it once did after 42,000
// replies).
func TestReplyBuffersSurviveCalibration(t *testing.T) {
	w := &ReplyWriter{}
	payload := make([]byte, 4096)
	reply := func() {
		w.buf = bufPool.Get()
		w.buf.B = frame.AppendData(w.buf.B[:0], payload)
		w.buf.B = w.buf.B[:0] // as after a flush
		w.release()
	}
	for range 50_000 { // past the pool's calibration threshold (42,000)
		reply()
	}
	if allocs := testing.AllocsPerRun(1000, reply); allocs != 0 {
		t.Errorf("%v allocations per reply after calibration, want 0", allocs)
	}
}

// TestInlineRepliesAfterSizeChange: inline replies use the loop's own
// buffer, so a switch from many small replies to larger ones allocates
// nothing (through bytebufferpool, calibrated on the small ones, every
// larger reply allocated until the next calibration).
func TestInlineRepliesAfterSizeChange(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(true))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	small, large := make([]byte, 64), make([]byte, 64<<10)
	for range 43_000 { // past bytebufferpool's calibration threshold (42,000)
		if _, err := c.Call(small); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Call(large); err != nil { // the client's buffers grow once
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Call(large); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 64 KiB round trip after 43,000 small ones, want 0", allocs)
	}
}

// TestZeroAllocsRings: a round trip over shared-memory rings allocates
// nothing either, with the request leased from the ring and the reply
// written into it in place (Reserve, Commit) or copied (Write), and
// neither do batches of queued requests.
func TestZeroAllocsRings(t *testing.T) {
	leakcheck.Check(t)
	inPlace := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		p, err := w.Reserve(len(req))
		if err != nil {
			return err
		}
		return w.Commit(copy(p, req))
	})
	for _, tc := range []struct {
		size     int
		h        Handler
		clientIn bool // the client takes replies in place
	}{
		{64, HandlerFunc(echoRaw), false}, {4096, HandlerFunc(echoRaw), false}, {1 << 20, HandlerFunc(echoRaw), false},
		{64, inPlace, false}, {100_000, inPlace, false},
		{64, HandlerFunc(echoRaw), true}, {100_000, HandlerFunc(echoRaw), true},
	} {
		ts := startServer(t, tc.h, WithRingLimits(4, 1<<20))
		opts := []ClientOption{WithRings(1 << 20)}
		if tc.clientIn {
			opts = append(opts, WithRingRepliesInPlace())
		}
		c, err := Dial(context.Background(), ts.path, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if !c.Rings() {
			t.Fatalf("size %d: no rings", tc.size)
		}
		allocs := callAllocs(t, c, tc.size)
		if allocs != 0 {
			t.Errorf("size %d: %v allocations per round trip over rings, want 0", tc.size, allocs)
		}
		if tc.size <= 4096 {
			// Batches: Queue stages each request in the ring, Flush
			// publishes them, Recv copies each reply out.
			req := make([]byte, tc.size)
			batch := func() {
				for range 16 {
					if err := c.Queue(req); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
				for range 16 {
					if _, err := c.Recv(); err != nil {
						t.Fatal(err)
					}
				}
			}
			batch()
			if allocs := testing.AllocsPerRun(200, batch); allocs != 0 {
				t.Errorf("size %d: %v allocations per batch of 16 over rings, want 0", tc.size, allocs)
			}
			// One-way messages: laid out in the Client's batch, copied into
			// the ring at Flush, served with no reply.
			posts := func() {
				for range 64 {
					if err := c.Post(req); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			posts()
			if allocs := testing.AllocsPerRun(200, posts); allocs != 0 {
				t.Errorf("size %d: %v allocations per 64 posts over rings, want 0", tc.size, allocs)
			}
			if _, err := c.Call(req); err != nil { // and all of them were served
				t.Fatal(err)
			}
		}
		c.Close()
	}
}
