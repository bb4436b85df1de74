package engine

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// bigReply answers "big:<n>" with n bytes (n in 4 big-endian bytes).
func bigReply(_ context.Context, req []byte, w *ReplyWriter) error {
	if len(req) == 8 && string(req[:4]) == "big:" {
		n := int(binary.BigEndian.Uint32(req[4:]))
		_, err := w.Write(make([]byte, n))
		return err
	}
	_, err := w.Write(req)
	return err
}

func bigRequest(n int) []byte {
	return binary.BigEndian.AppendUint32([]byte("big:"), uint32(n))
}

// TestDrainWaitsWithoutPolling: connections whose peers never read cost
// no work while they wait: the loop looks at a connection's outbound buffer
// only when its peer reads (at most once when the wait starts), never on a
// timer.
func TestDrainWaitsWithoutPolling(t *testing.T) {
	const conns, reply = 50, 3 << 20
	for _, tc := range []struct {
		name   string
		inline bool
		mark   int
	}{
		{"inline", true, DefaultOutboundHighWater},
		{"pool", false, DefaultOutboundHighWater},
		{"pool-held", false, 512 << 10}, // the worker waits for the peer
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			ts := startServer(t, HandlerFunc(bigReply), WithInlineHandlers(tc.inline), WithWorkers(conns),
				// A write timeout that a loaded machine, making 150 MiB
				// of replies under -race, cannot reach before the read.
				WithOutboundHighWater(tc.mark), WithWriteTimeout(5*time.Minute))
			cs := make([]*net.UnixConn, conns)
			msg := frame.AppendMessage(nil, bigRequest(reply))
			for i := range cs {
				cs[i] = dialRaw(t, ts.path)
				if _, err := cs[i].Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			// Every connection is stuck behind its unread reply.
			// (150 MiB of replies made and queued: seconds under -race.)
			waitWithin(t, time.Minute, func() bool { return ts.Stats().Requests == conns })
			time.Sleep(200 * time.Millisecond)
			before := ts.Stats().DrainChecks
			time.Sleep(time.Second)
			st := ts.Stats()
			if n := st.DrainChecks - before; n > conns {
				t.Fatalf("%d looks at %d connections whose peers did not read in 1 s: the wait polls", n, conns)
			}
			// Inline replies to requests that came whole with their
			// connection were served by the accept loop (git-style path)
			// and wait for their readers in goroutines of their own.
			if st.DrainFallbacks != 0 || st.WriteTimeout != 0 || st.Open+st.Lingering != conns {
				t.Fatalf("stats %+v", st)
			}
			// A reader drains its connection: the wait ends without the
			// deadline, and the reply is whole.
			reader := cs[0]
			// The dial's deadline may be spent: the replies take seconds
			// to make under -race.
			_ = reader.SetDeadline(time.Now().Add(30 * time.Second))
			got, kind := readAll(t, reader)
			if want := reply + 4*(reply/65516+1) + 4; len(got) != want || kind != kindEOF {
				t.Fatalf("reply of %d bytes (%s), want %d", len(got), kind, want)
			}
			for _, c := range cs[1:] {
				c.Close()
			}
			waitFor(t, func() bool { st := ts.Stats(); return st.Open == 0 && st.Lingering == 0 })
		})
	}
}

// largeReplyOptions serve 4 MiB replies in either mode: an inline reply may
// queue no more than the high-water mark, so inline needs a higher one.
func largeReplyOptions(inline bool) []Option {
	if inline {
		return []Option{WithInlineHandlers(true), WithOutboundHighWater(8 << 20)}
	}
	return nil
}

// TestPipelinedLargeReplies: sixteen 4 MiB replies pipelined on one
// connection all arrive whole and in order, in both modes.
func TestPipelinedLargeReplies(t *testing.T) {
	for _, inline := range []bool{true, false} {
		leakcheck.Check(t)
		ts := startServer(t, HandlerFunc(bigReply), largeReplyOptions(inline)...)
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		for range 2 {
			for i := range 16 {
				if err := c.Send(bigRequest(4<<20 + i)); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 16 {
				got, err := c.Recv()
				if err != nil || len(got) != 4<<20+i {
					t.Fatalf("inline=%v reply %d: %d bytes, %v", inline, i, len(got), err)
				}
			}
		}
	}
}

// BenchmarkPipelinedLargeReplies measures, in one run, a lone 4 MiB reply's
// round trip and the time per reply of sixteen pipelined ones: a
// connection whose replies wait for its peer must stream, not stall. The
// metric x-lone is the pipelined time per reply over the lone round trip.
func BenchmarkPipelinedLargeReplies(b *testing.B) {
	for _, mode := range []string{"inline", "pool"} {
		b.Run(mode, func(b *testing.B) {
			ts := startServer(b, HandlerFunc(bigReply), largeReplyOptions(mode == "inline")...)
			c, err := Dial(context.Background(), ts.path)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := bigRequest(4 << 20)
			var lone, piped time.Duration
			b.SetBytes(17 * 4 << 20)
			for b.Loop() {
				start := time.Now()
				if _, err := c.Call(req); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				for range 16 {
					if err := c.Send(req); err != nil {
						b.Fatal(err)
					}
				}
				for range 16 {
					if _, err := c.Recv(); err != nil {
						b.Fatal(err)
					}
				}
				lone += mid.Sub(start)
				piped += time.Since(mid)
			}
			b.ReportMetric(float64(lone.Nanoseconds())/float64(b.N), "lone-ns")
			b.ReportMetric(float64(piped.Nanoseconds())/float64(16*b.N), "piped-ns/reply")
			b.ReportMetric(float64(piped)/float64(16*lone), "x-lone")
		})
	}
}
