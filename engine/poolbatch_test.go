package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// queueAll queues reqs on c and flushes them in one write, so that the
// server reads them together.
func queueAll(t *testing.T, c *Client, reqs [][]byte) {
	t.Helper()
	for _, r := range reqs {
		if err := c.Queue(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}

// dialClient dials a persistent Client to path, closed when the test
// ends.
func dialClient(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectReplies receives one reply per want, in order.
func expectReplies(t *testing.T, c *Client, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if got, err := c.Recv(); err != nil || string(got) != want {
			t.Fatalf("Recv = %q, %v; want %q", got, err, want)
		}
	}
}

// expectIncomplete receives n replies, each of which must fail with
// ErrIncompleteReply.
func expectIncomplete(t *testing.T, c *Client, n int) {
	t.Helper()
	for range n {
		if got, err := c.Recv(); !errors.Is(err, ErrIncompleteReply) {
			t.Fatalf("Recv = %q, %v; want ErrIncompleteReply", got, err)
		}
	}
}

// TestPooledBatch: requests that arrive together on a persistent
// connection to a pooled server are served in turn by one worker, in
// order, one handler at a time, and answered in order; a large request
// (gathered from several packets) ends a batch, and the batch's bounds
// hold.
func TestPooledBatch(t *testing.T) {
	leakcheck.Check(t)
	var mu sync.Mutex
	var order []string
	running := 0
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		mu.Lock()
		running++
		if running > 1 {
			mu.Unlock()
			return errors.New("two handlers of one connection at once")
		}
		if len(req) < 16 {
			order = append(order, string(req))
		}
		mu.Unlock()
		_, err := w.Write(append([]byte("re:"), req...))
		mu.Lock()
		running--
		mu.Unlock()
		return err
	})
	ts := startServer(t, h)
	c := dialClient(t, ts.path)
	var reqs [][]byte
	for i := range 150 {
		switch i {
		case 40:
			reqs = append(reqs, bytes.Repeat([]byte("L"), 100_000)) // two packets: gathered
		case 41:
			reqs = append(reqs, nil)
		default:
			reqs = append(reqs, fmt.Appendf(nil, "r%d", i))
		}
	}
	queueAll(t, c, reqs)
	for i, r := range reqs {
		got, err := c.Recv()
		if want := append([]byte("re:"), r...); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("reply %d: %d bytes, %v; want %d bytes", i, len(got), err, len(want))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var want []string
	for _, r := range reqs {
		if len(r) < 16 {
			want = append(want, string(r))
		}
	}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("handlers ran in the order %v, want %v", order, want)
	}
	// 150 requests in one write: batches of at most pooledBatchMax, one
	// of them ended early by the gathered request.
	if got := ts.Stats().PoolBatched; got == 0 || got > uint64(len(reqs)-2) {
		t.Fatalf("PoolBatched = %d for %d requests that came together", got, len(reqs))
	}
}

// TestPooledBatchFailure: a handler that panics in the middle of a batch
// ends the connection as a single pooled request's panic does, after the
// replies to the requests before it went out; the requests after it get
// ErrIncompleteReply.
func TestPooledBatchFailure(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "panic" {
			panic("in the middle of a batch")
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h)
	c := dialClient(t, ts.path)
	queueAll(t, c, [][]byte{[]byte("a"), []byte("b"), []byte("panic"), []byte("c")})
	expectReplies(t, c, "a", "b")
	expectIncomplete(t, c, 2)
	waitFor(t, func() bool { return ts.Stats().Panics == 1 && ts.Stats().Open == 0 })
	if ts.Stats().PoolBatched == 0 {
		t.Fatal("the requests were not served as a batch")
	}
	if got, err := c.Call([]byte("again")); err != nil || string(got) != "again" {
		t.Fatalf("Call after the failed batch = %q, %v", got, err)
	}
}

// TestPooledBatchHandlerTimeout: each handler of a batch has its own
// time: handlers that each take most of the handler timeout, one after
// another, are all served.
func TestPooledBatchHandlerTimeout(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		select {
		case <-time.After(60 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, WithHandlerTimeout(150*time.Millisecond))
	c := dialClient(t, ts.path)
	reqs := [][]byte{[]byte("1"), []byte("2"), []byte("3"), []byte("4"), []byte("5")}
	queueAll(t, c, reqs)
	for _, r := range reqs {
		if got, err := c.Recv(); err != nil || !bytes.Equal(got, r) {
			t.Fatalf("Recv = %q, %v; want %q", got, err, r)
		}
	}
	if st := ts.Stats(); st.HandlerTimeout != 0 || st.PoolBatched == 0 {
		t.Fatalf("%d handler timeouts for handlers within their own time, %d requests batched", st.HandlerTimeout, st.PoolBatched)
	}
}

// TestPooledBatchRepliesGoFirst: the reply to each request of a batch
// leaves before the next handler starts, so a handler that waits for its
// client to act on an earlier reply does not wait forever.
func TestPooledBatchRepliesGoFirst(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "wait" {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h)
	c := dialClient(t, ts.path)
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	queueAll(t, c, [][]byte{[]byte("a"), []byte("b"), []byte("wait"), []byte("c")})
	expectReplies(t, c, "a", "b")
	close(release)
	expectReplies(t, c, "wait", "c")
	if ts.Stats().PoolBatched == 0 {
		t.Fatal("the requests were not served as a batch")
	}
}

// TestPooledBatchTimeoutAfterReplies: a handler that runs out its time
// in the middle of a batch ends the connection, and the replies finished
// before it have reached the client.
func TestPooledBatchTimeoutAfterReplies(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "slow" {
			<-ctx.Done()
			return ctx.Err()
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, WithHandlerTimeout(200*time.Millisecond))
	c := dialClient(t, ts.path)
	queueAll(t, c, [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("slow"), []byte("d")})
	expectReplies(t, c, "a", "b", "c")
	expectIncomplete(t, c, 2)
	if st := ts.Stats(); st.HandlerTimeout != 1 || st.PoolBatched == 0 {
		t.Fatalf("%d handler timeouts, %d requests batched; want 1 and some", st.HandlerTimeout, st.PoolBatched)
	}
}

// TestPooledBatchErrorBehind: a malformed or oversized request behind a
// batch ends the connection only after the batch's requests are answered.
func TestPooledBatchErrorBehind(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), WithMaxRequestSize(1024))
	c := dialClient(t, ts.path)
	queueAll(t, c, [][]byte{[]byte("a"), []byte("b"), bytes.Repeat([]byte("x"), 4096)})
	expectReplies(t, c, "a", "b")
	expectIncomplete(t, c, 1)
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	if st := ts.Stats(); st.ProtocolErrors != 1 || st.PoolBatched == 0 {
		t.Fatalf("%d protocol errors, %d requests batched; want 1 and some", st.ProtocolErrors, st.PoolBatched)
	}
}

// TestPooledBatchQuit: a handler that asks the server to quit in the
// middle of a batch ends it: its reply is the connection's last.
func TestPooledBatchQuit(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		_, err := w.Write(req)
		if err == nil && string(req) == "quit" {
			return ErrQuit
		}
		return err
	})
	ts := startServer(t, h)
	c := dialClient(t, ts.path)
	queueAll(t, c, [][]byte{[]byte("a"), []byte("quit"), []byte("b")})
	expectReplies(t, c, "a", "quit")
	expectIncomplete(t, c, 1)
}

// quitEcho echoes, and answers "quit" (after a moment, so that the batch
// it came in is read whole) with ErrQuit.
func quitEcho(_ context.Context, req []byte, w *ReplyWriter) error {
	if string(req) == "quit" {
		time.Sleep(30 * time.Millisecond)
		_, _ = w.WriteString("quit")
		return ErrQuit
	}
	_, err := w.Write(req)
	return err
}

// A quit's reply is the last on its connection: a request pipelined
// behind it, in its batch or after, gets no reply, so none can take the
// reply of another. Serve's goroutine, which stops the server, may not
// have run yet when the connection goes on (quitOnce taken here stands in
// for one that never does), pooled or inline.
func TestQuitReplyIsTheLast(t *testing.T) {
	leakcheck.Check(t)
	for _, inline := range []bool{false, true} {
		for _, serveLate := range []bool{false, true} {
			t.Run(fmt.Sprintf("inline=%v,serveLate=%v", inline, serveLate), func(t *testing.T) {
				ts := startServer(t, HandlerFunc(quitEcho), WithInlineHandlers(inline))
				if serveLate {
					ts.quitOnce.Do(func() {})
				}
				c := dialClient(t, ts.path)
				queueAll(t, c, [][]byte{[]byte("quit"), []byte("b")})
				time.Sleep(10 * time.Millisecond)
				if err := c.Send([]byte("c")); err != nil {
					t.Fatal(err)
				}
				expectReplies(t, c, "quit")
				if got, err := c.Recv(); err == nil {
					t.Fatalf("request b got reply %q", got)
				}
			})
		}
	}
}
