package engine

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// rescuedRequest sends req on a new persistent connection to path, waits
// until its handler runs (started) and shuts the connection's writing
// side: the server rescues the reply (Stats.Rescued).
func rescuedRequest(t *testing.T, s *Server, path, req string, started <-chan struct{}) *net.UnixConn {
	t.Helper()
	c := rawPersistent(t, path).(*net.UnixConn)
	if _, err := c.Write(frame.AppendMessage(nil, []byte(req))); err != nil {
		t.Fatal(err)
	}
	if started != nil {
		<-started
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return s.Stats().Rescued == 1 })
	return c
}

// closeWithin closes s and fails the test if that takes longer than d.
func closeWithin(t *testing.T, s *Server, serving <-chan error, d time.Duration) {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
		<-serving
	case <-time.After(d):
		t.Fatalf("Close still runs after %v", d)
	}
}

// TestRescuedConnectionsEnd: a connection rescued at its peer's half close
// (its reply finished on a duplicate of the socket) stays under the
// server's watch: it counts as open, Close cancels its handler and ends
// a tail's write to a peer that does not read, and the handler deadline
// still holds. Before, nothing watched it: Close waited for the handler
// forever, and the deadline never came.
func TestRescuedConnectionsEnd(t *testing.T) {
	t.Run("Close", func(t *testing.T) {
		leakcheck.Check(t)
		started := make(chan struct{}, 1)
		h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		})
		path := socketPath(t)
		s, err := NewServer(path, h, WithWorkers(2))
		if err != nil {
			t.Fatal(err)
		}
		serving := make(chan error, 1)
		go func() { serving <- s.Serve(context.Background()) }()
		c := rescuedRequest(t, s, path, "block", started)
		defer c.Close()
		if n := s.Stats().Open; n != 1 {
			t.Errorf("%d connections open with the rescued one's handler running, want 1", n)
		}
		closeWithin(t, s, serving, 5*time.Second)
	})
	t.Run("deadline", func(t *testing.T) {
		leakcheck.Check(t)
		started := make(chan struct{}, 1)
		ended := make(chan error, 1)
		release := make(chan struct{})
		h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
			started <- struct{}{}
			select {
			case <-ctx.Done():
				ended <- context.Cause(ctx)
			case <-release:
				ended <- nil
			}
			return ctx.Err()
		})
		ts := startServer(t, h, WithWorkers(2), WithHandlerTimeout(100*time.Millisecond))
		defer close(release)
		c := rescuedRequest(t, ts.Server, ts.path, "block", started)
		defer c.Close()
		select {
		case err := <-ended:
			if err == nil {
				t.Fatal("the handler was released, not cancelled")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a rescued handler outlived its deadline by seconds")
		}
		waitFor(t, func() bool { return ts.Stats().HandlerTimeout == 1 && ts.Stats().Open == 0 })
	})
	t.Run("tail", func(t *testing.T) {
		leakcheck.Check(t)
		big := make([]byte, 3<<20)
		h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
			_, err := w.Write(big)
			return err
		})
		path := socketPath(t)
		s, err := NewServer(path, h, WithInlineHandlers(true), WithWriteTimeout(0))
		if err != nil {
			t.Fatal(err)
		}
		serving := make(chan error, 1)
		go func() { serving <- s.Serve(context.Background()) }()
		c := rescuedRequest(t, s, path, "x", nil) // and never reads
		defer c.Close()
		closeWithin(t, s, serving, 5*time.Second)
	})
}

// TestQueuedRequestOfClosedConnection: a pooled request still waiting for
// a worker when its client closes the connection is not handed to the
// handler: nobody would read its reply.
func TestQueuedRequestOfClosedConnection(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	ran := make(chan string, 4)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		ran <- string(req)
		if string(req) == "block" {
			<-release
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, WithWorkers(1))
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	a := rawPersistent(t, ts.path)
	if _, err := a.Write(frame.AppendMessage(nil, []byte("block"))); err != nil {
		t.Fatal(err)
	}
	if got := <-ran; got != "block" {
		t.Fatalf("first request %q", got)
	}
	b := rawPersistent(t, ts.path).(*net.UnixConn)
	if _, err := b.Write(frame.AppendMessage(nil, []byte("queued"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Stats().Requests == 2 }) // dispatched: in the queue, behind "block"
	b.Close()
	waitFor(t, func() bool { return ts.Stats().Open == 1 })
	close(release)
	// One worker takes the jobs in order: once a later request is
	// answered, the queued one has been taken, and skipped.
	if got, err := Send(context.Background(), ts.path, []byte("probe")); err != nil || string(got) != "probe" {
		t.Fatalf("probe: %q, %v", got, err)
	}
	for len(ran) > 0 {
		if got := <-ran; got == "queued" {
			t.Fatal("the handler ran for a request whose connection had closed while it waited")
		}
	}
}

// TestLeftoverOwnDeadline: the requests a half-closed peer pipelined
// behind a rescued one are served each within its own handler deadline,
// not the rescued request's: together they take longer than one deadline,
// and every reply comes whole.
func TestLeftoverOwnDeadline(t *testing.T) {
	leakcheck.Check(t)
	const each, limit = 600 * time.Millisecond, time.Second
	started := make(chan struct{}, 3)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		started <- struct{}{}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(each):
		}
		_, err := w.WriteString("re: " + string(req))
		return err
	})
	ts := startServer(t, h, WithWorkers(2), WithHandlerTimeout(limit))
	c := rawPersistent(t, ts.path).(*net.UnixConn)
	defer c.Close()
	if _, err := c.Write(frame.AppendMessage(nil, []byte("slow"))); err != nil {
		t.Fatal(err)
	}
	<-started // dispatched: what follows waits in the loop's buffer
	var rest []byte
	for _, r := range []string{"one", "two"} {
		rest = frame.AppendMessage(rest, []byte(r))
	}
	got := writeHalfClose(t, c, rest)
	for _, want := range []string{"re: slow", "re: one", "re: two"} {
		var msg []byte
		msg, got = decodeMessage(t, got)
		if string(msg) != want {
			t.Fatalf("reply %q, want %q (handler timeouts: %d)", msg, want, ts.Stats().HandlerTimeout)
		}
	}
	if n := ts.Stats().HandlerTimeout; n != 0 {
		t.Fatalf("%d handler timeouts, none of the handlers ran past its own", n)
	}
}
