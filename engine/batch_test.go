package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// countWrites makes c count the write system-call rounds of its socket
// (each RawConn.Write callback) in *n.
func countWrites(c *Client, n *int) {
	c.writeFn = func(fd uintptr) bool {
		*n++
		return c.writeOnce(fd)
	}
}

// TestQueueBatches: queued requests leave in one write, the server reads
// them in one read and answers them in one write (Stats.Batched), and
// every reply matches its request, in order, in both handler modes.
func TestQueueBatches(t *testing.T) {
	for _, inline := range []bool{true, false} {
		t.Run(fmt.Sprint("inline=", inline), func(t *testing.T) {
			leakcheck.Check(t)
			ts := startServer(t, HandlerFunc(echo), WithInlineHandlers(inline))
			c, err := Dial(context.Background(), ts.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var writes int
			countWrites(c, &writes)
			const n = 50
			for i := range n {
				if err := c.Queue([]byte(fmt.Sprint("req", i))); err != nil {
					t.Fatal(err)
				}
			}
			if writes != 0 {
				t.Fatalf("Queue wrote %d times before Flush", writes)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			if writes != 1 {
				t.Fatalf("%d requests left in %d writes, want 1", n, writes)
			}
			for i := range n {
				got, err := c.Recv()
				if want := fmt.Sprint("re:req", i); err != nil || string(got) != want {
					t.Fatalf("reply %d = %q, %v; want %q", i, got, err, want)
				}
			}
			if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
				t.Fatalf("Recv past the last reply: %v, want ErrNoRequest", err)
			}
			// The requests came in one read; inline, all but the last
			// reply waited for the next.
			if got := ts.Stats().Batched; inline && got != n-1 {
				t.Fatalf("Batched = %d, want %d", got, n-1)
			} else if !inline && got != 0 {
				t.Fatalf("Batched = %d with pooled handlers, want 0", got)
			}
		})
	}
}

// TestSendBatchSizes: SendBatch with requests from empty to larger than a
// batch (which flushes mid-way), and Send after Queue (one write for
// both), keep every reply with its request.
//
// With the system's default send buffers a large reply does not fit the
// socket: what it does not take of the gathered pieces goes through gnet's
// buffer, after the batched replies before it.
func TestSendBatchSizes(t *testing.T) {
	for _, buf := range []int{0, DefaultSendBuffer} {
		t.Run(fmt.Sprint("sndbuf=", buf), func(t *testing.T) { testSendBatchSizes(t, buf) })
	}
}

func testSendBatchSizes(t *testing.T, sndbuf int) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo), WithInlineHandlers(true), WithSendBuffer(sndbuf))
	c, err := Dial(context.Background(), ts.path, WithClientSendBuffer(sndbuf))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sizes := []int{0, 1, 64, 65516, 65517, 100, 200_000, 3, 1 << 20, 7}
	reqs := make([][]byte, len(sizes))
	for i, n := range sizes {
		reqs[i] = bytes.Repeat([]byte{byte('a' + i)}, n)
	}
	n, err := c.SendBatch(reqs)
	if err != nil || n != len(reqs) {
		t.Fatalf("SendBatch = %d, %v", n, err)
	}
	for i := range reqs {
		got, err := c.Recv()
		if err != nil || !bytes.Equal(got, append([]byte("re:"), reqs[i]...)) {
			t.Fatalf("reply %d: %d bytes, %v; want %d", i, len(got), err, len(reqs[i])+3)
		}
	}
	var writes int
	countWrites(c, &writes)
	if err := c.Queue([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := c.Send([]byte("two")); err != nil {
		t.Fatal(err)
	}
	if writes != 1 {
		t.Fatalf("Queue then Send: %d writes, want 1", writes)
	}
	for _, want := range []string{"re:one", "re:two"} {
		if got, err := c.Recv(); err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
}

// TestBatchPanicMidway: a handler that panics in the middle of a batch
// closes the connection after the replies before it went out whole; the
// request that panicked and those behind it fail with ErrIncompleteReply,
// and no reply is taken for another request's.
func TestBatchPanicMidway(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if _, err := w.WriteString("partial:"); err != nil {
			return err
		}
		if string(req) == "boom" {
			panic("boom")
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, WithInlineHandlers(true))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reqs := [][]byte{[]byte("a"), []byte("b"), []byte("boom"), []byte("c")}
	if _, err := c.SendBatch(reqs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"partial:a", "partial:b"} {
		if got, err := c.Recv(); err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	for i := range 2 {
		if got, err := c.Recv(); !errors.Is(err, ErrIncompleteReply) {
			t.Fatalf("request %d behind the panic: %q, %v; want ErrIncompleteReply", i, got, err)
		}
	}
	if got := ts.Stats().Panics; got != 1 {
		t.Fatalf("Panics = %d", got)
	}
	// The Client reconnects for the next request.
	if got, err := c.Call([]byte("d")); err != nil || string(got) != "partial:d" {
		t.Fatalf("after the panic: %q, %v", got, err)
	}
}

// TestQueueAfterIdleClose: a batch queued on a connection the server
// closed for idleness goes out on a new connection, whole.
func TestQueueAfterIdleClose(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo), WithIdleTimeout(100*time.Millisecond))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, func() bool { st := ts.Stats(); return st.IdleTimeout == 1 && st.Open == 0 })
	if _, err := c.SendBatch([][]byte{[]byte("x"), []byte("y")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"re:x", "re:y"} {
		if got, err := c.Recv(); err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	if n := ts.Stats().Accepted; n != 2 {
		t.Fatalf("accepted %d, want 2", n)
	}
}

// TestBatchCutShort: a server that answers two requests of a batch and
// closes. The two get their replies, the rest ErrIncompleteReply (each may
// have been processed), each in its own Recv.
func TestBatchCutShort(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			defer conn.Close()
			r := frame.NewReader(conn, frame.SimpleIPC, 1<<20)
			if _, err := r.ReadMessage(); err != nil { // the handshake
				return err
			}
			if _, err := conn.Write(frame.AppendMessage(nil, helloReply)); err != nil {
				return err
			}
			var out []byte
			for range 2 {
				msg, err := r.ReadMessage()
				if err != nil {
					return err
				}
				out = frame.AppendMessage(out, append([]byte("re:"), msg...))
			}
			_, err = conn.Write(out)
			return err
		}()
	}()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SendBatch([][]byte{[]byte("1"), []byte("2"), []byte("3"), []byte("4")}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"re:1", "re:2"} {
		if got, err := c.Recv(); err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	for i := range 2 {
		if got, err := c.Recv(); !errors.Is(err, ErrIncompleteReply) {
			t.Fatalf("request %d after the close: %q, %v; want ErrIncompleteReply", i+3, got, err)
		}
	}
	if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("Recv past the last request: %v", err)
	}
}

// TestQueueToGitServer: with a server that answers one request per
// connection, Queue is Send: each request on a connection of its own.
func TestQueueToGitServer(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo), WithPersistent(false))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SendBatch([][]byte{[]byte("p"), []byte("q"), []byte("r")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"re:p", "re:q", "re:r"} {
		if got, err := c.Recv(); err != nil || string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	if got := ts.Stats().Accepted; got != 4 {
		t.Fatalf("accepted %d connections, want 4 (handshake + one per request)", got)
	}
}

// TestQueueClosed: Queue, Flush and SendBatch on a closed Client fail
// with ErrClientClosed.
func TestQueueClosed(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Queue([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.Queue([]byte("y")); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("Queue after Close: %v", err)
	}
	if err := c.Flush(); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("Flush after Close: %v", err)
	}
	if n, err := c.SendBatch([][]byte{[]byte("z")}); n != 0 || !errors.Is(err, ErrClientClosed) {
		t.Fatalf("SendBatch after Close: %d, %v", n, err)
	}
}

// TestSendBufferOptions: the send buffer options reach the sockets (as far
// as net.core.wmem_max lets them) and refuse negative sizes.
func TestSendBufferOptions(t *testing.T) {
	leakcheck.Check(t)
	if _, err := NewServer(socketPath(t), HandlerFunc(echo), WithSendBuffer(-1)); err == nil {
		t.Fatal("WithSendBuffer(-1) accepted")
	}
	if _, err := Dial(context.Background(), socketPath(t), WithClientSendBuffer(-1)); err == nil {
		t.Fatal("WithClientSendBuffer(-1) accepted")
	}
	const want = 768 << 10
	ts := startServer(t, HandlerFunc(echo))
	c, err := Dial(context.Background(), ts.path, WithClientSendBuffer(want))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := sendBufferOf(c.uc)
	if err != nil {
		t.Skip(err)
	}
	if limit, ok := wmemMax(); ok && limit >= want && got < want {
		t.Fatalf("SO_SNDBUF = %d after asking for %d (wmem_max %d)", got, want, limit)
	}
}

// TestSendUncopied: large requests sent from the caller's bytes (writev)
// and small ones (Send's path), pipelined, get their own replies, with the
// system's default send buffer too; after the server closed the idle
// connection, a large one goes out on a new connection.
func TestSendUncopied(t *testing.T) {
	for _, buf := range []int{0, DefaultSendBuffer} {
		t.Run(fmt.Sprint("sndbuf=", buf), func(t *testing.T) {
			leakcheck.Check(t)
			// The idle timeout must not end the connection while the
			// client, starved on a loaded machine, is between two sends.
			ts := startServer(t, HandlerFunc(echo), WithInlineHandlers(true), WithIdleTimeout(time.Second))
			c, err := Dial(context.Background(), ts.path, WithClientSendBuffer(buf))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sizes := []int{100_000, 10, 1 << 20, 65516, 3<<20 + 7}
			for i, n := range sizes {
				if err := c.SendUncopied(bytes.Repeat([]byte{byte('k' + i)}, n)); err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range sizes {
				got, err := c.Recv()
				if want := append([]byte("re:"), bytes.Repeat([]byte{byte('k' + i)}, n)...); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("reply %d: %d bytes, %v; want %d", i, len(got), err, len(want))
				}
			}
			waitFor(t, func() bool { st := ts.Stats(); return st.IdleTimeout == 1 && st.Open == 0 })
			big := bytes.Repeat([]byte("z"), 200_000)
			if err := c.SendUncopied(big); err != nil {
				t.Fatal(err)
			}
			if got, err := c.Recv(); err != nil || !bytes.Equal(got, append([]byte("re:"), big...)) {
				t.Fatalf("after the idle close: %d bytes, %v", len(got), err)
			}
			if n := ts.Stats().Accepted; n != 2 {
				t.Fatalf("accepted %d, want 2", n)
			}
		})
	}
}

// TestIdleWaitsForSlowReader: a reply that gnet still holds for a peer
// that reads slowly is not cut by the idle timeout: the connection
// closes once the peer has read it, and the reply arrives whole.
func TestIdleWaitsForSlowReader(t *testing.T) {
	for _, inline := range []bool{true, false} {
		t.Run(fmt.Sprint("inline=", inline), func(t *testing.T) {
			leakcheck.Check(t)
			ts, c, req := sendUnread(t, WithInlineHandlers(inline), WithIdleTimeout(50*time.Millisecond))
			time.Sleep(300 * time.Millisecond) // six idle timeouts, reading nothing
			got, err := c.Recv()
			if err != nil || !bytes.Equal(got, append([]byte("re:"), req...)) {
				t.Fatalf("reply after a slow read: %d bytes, %v; want %d", len(got), err, len(req)+3)
			}
			// (the first connection may time out before Send, under -race)
			waitFor(t, func() bool { st := ts.Stats(); return st.Open == 0 && st.IdleTimeout >= 1 })
		})
	}
}

// TestShutdownWaitsForSlowReader: Shutdown closes an idle connection
// only after its peer has read the reply gnet still holds for it.
func TestShutdownWaitsForSlowReader(t *testing.T) {
	leakcheck.Check(t)
	ts, c, req := sendUnread(t, WithInlineHandlers(true))
	time.Sleep(50 * time.Millisecond) // the loop has queued what the socket did not take
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- ts.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond) // many reaper ticks while stopping, reading nothing
	got, err := c.Recv()
	if err != nil || !bytes.Equal(got, append([]byte("re:"), req...)) {
		t.Fatalf("reply read during Shutdown: %d bytes, %v; want %d", len(got), err, len(req)+3)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Shutdown lets a git-style request in progress finish: one whose reply
// the socket did not take at once (written on by a lingering goroutine),
// and one the accept loop is still serving itself, whose reply then
// lingers.
func TestShutdownWaitsForOneShot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler time.Duration // how long the handler takes
	}{{"lingering", 0}, {"serving", 200 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			big := pattern(1<<20, 9)
			started := make(chan struct{})
			ts := startServer(t, HandlerFunc(func(_ context.Context, _ []byte, w *ReplyWriter) error {
				close(started)
				time.Sleep(tc.handler)
				_, err := w.Write(big)
				return err
			}), WithInlineHandlers(true))
			c := dialRaw(t, ts.path)
			if _, err := c.Write([]byte("0007big0000")); err != nil {
				t.Fatal(err)
			}
			<-started
			if tc.handler == 0 {
				waitFor(t, func() bool { return ts.Stats().Lingering == 1 })
			}
			done := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				done <- ts.Shutdown(ctx)
			}()
			time.Sleep(tc.handler + 100*time.Millisecond) // Shutdown waits while nothing is read
			got, _ := readAll(t, c)
			if err := <-done; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if want := frame.AppendFlush(frame.AppendData(nil, big)); !bytes.Equal(got, want) {
				t.Fatalf("read %d reply bytes during Shutdown, want %d", len(got), len(want))
			}
		})
	}
}

// A git-style reply left to linger keeps its connection's place under
// the caps until it is written: clients that never read hold no more
// connections than the caps allow.
func TestLingeringRepliesWithinCaps(t *testing.T) {
	leakcheck.Check(t)
	big := pattern(1<<20, 3)
	reqs := make([]string, 16)
	for i := range reqs {
		reqs[i] = "big"
	}
	// Every request is whole before Serve: the accept loop serves each
	// itself (or refuses it at the cap), none waits in the lobby.
	s, cs, _ := queuedShots(t, HandlerFunc(func(_ context.Context, _ []byte, w *ReplyWriter) error {
		_, err := w.Write(big)
		return err
	}), reqs, WithInlineHandlers(true), WithMaxConns(4, 4))
	waitFor(t, func() bool { st := s.Stats(); return st.Lingering+int(st.OverCap) == 16 })
	if st := s.Stats(); st.Lingering > 4 {
		t.Fatalf("%d replies linger with a cap of 4 connections (over the cap: %d)", st.Lingering, st.OverCap)
	}
	for _, c := range cs {
		c.Close()
	}
	waitFor(t, func() bool { return s.Stats().Lingering == 0 })
	// Their places are given back: a request is served again.
	if got, err := Send(context.Background(), s.Path(), []byte("x")); err != nil || len(got) != len(big) {
		t.Fatalf("Send after the lingering replies: %d bytes, %v", len(got), err)
	}
}

// sendUnread starts an echo server with opts and sends it a request whose
// reply is more than the sockets' buffers hold but less than the
// high-water mark, so that the loop queues the rest of the reply and the
// connection goes idle while the client reads nothing yet.
func sendUnread(t *testing.T, opts ...Option) (*testServer, *Client, []byte) {
	t.Helper()
	ts := startServer(t, HandlerFunc(echo), opts...)
	c, err := Dial(context.Background(), ts.path, WithClientSendBuffer(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := bytes.Repeat([]byte("s"), 3<<20)
	if err := c.Send(req); err != nil {
		t.Fatal(err)
	}
	return ts, c, req
}
