package engine

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// queuedShots makes a server with a pooled handler and, before it
// serves, connects a client per request and writes the request: the
// accept loop then finds each whole, and serves it on the git-style
// path, on a worker. It returns the server, once serving, the clients in
// order, and a function that waits for Serve's result.
func queuedShots(t *testing.T, h Handler, reqs []string, opts ...Option) (*Server, []*net.UnixConn, func() error) {
	t.Helper()
	s, err := NewServer(socketPath(t), h, append([]Option{WithInlineHandlers(false)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	var cs []*net.UnixConn
	for _, r := range reqs {
		c := dialRaw(t, s.Path())
		if _, err := c.Write(frame.AppendMessage(nil, []byte(r))); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	var once sync.Once
	var serveErr error
	wait := func() error {
		once.Do(func() { serveErr = <-done })
		return serveErr
	}
	t.Cleanup(func() {
		s.Close()
		wait()
	})
	return s, cs, wait
}

// TestPooledOneShot: a whole request whose handler runs on the workers is
// served on the bare descriptor, never enrolled in a loop; its reply may
// come in parts (each sent as written), and a large one to a slow reader
// waits on its worker while the accept loop serves others.
func TestPooledOneShot(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		switch string(req) {
		case "parts":
			if _, err := w.WriteString("first"); err != nil {
				return err
			}
			<-release // the client has the first part by now
			_, err := w.WriteString("second")
			return err
		case "big":
			_, err := w.Write(bytes.Repeat([]byte("b"), 3<<20))
			return err
		}
		return echoRaw(ctx, req, w)
	})
	s, cs, _ := queuedShots(t, h, []string{"parts", "big", "echo"})
	first := make([]byte, 9)
	if _, err := cs[0].Read(first); err != nil || string(first) != "0009first" {
		t.Fatalf("the first part: %q, %v", first, err)
	}
	close(release)
	if rest, kind := readAll(t, cs[0]); string(rest) != "000asecond0000" || kind != kindEOF {
		t.Fatalf("the rest: %q (%s)", rest, kind)
	}
	// The big reply's worker waits for its reader; the others are served.
	if got, kind := readAll(t, cs[2]); string(got) != "0008echo0000" || kind != kindEOF {
		t.Fatalf("echo: %q (%s)", got, kind)
	}
	if got, err := Send(context.Background(), s.Path(), []byte("next")); err != nil || string(got) != "next" {
		t.Fatalf("beside a slow reader: %q, %v", got, err)
	}
	got, kind := readAll(t, cs[1])
	if want := 3<<20 + 4*(3<<20/65516+1) + 4; len(got) != want || kind != kindEOF {
		t.Fatalf("the slow reader got %d bytes (%s), want %d", len(got), kind, want)
	}
	st := s.Stats()
	if st.OneShot < 3 {
		t.Fatalf("stats %+v: want the three queued requests served one-shot", st)
	}
}

// TestPooledOneShotDeadlines: a pooled one-shot handler that overruns its
// deadline is cancelled with a deadline cause and its client sees the end
// at once, without a terminator; a reply nobody reads ends at the write
// deadline; neither holds a cap once ended.
func TestPooledOneShotDeadlines(t *testing.T) {
	leakcheck.Check(t)
	causes := make(chan error, 1)
	big := make([]byte, 1<<20) // well over what the socket holds
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "big" {
			_, err := w.Write(big)
			return err
		}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	})
	s, cs, _ := queuedShots(t, h, []string{"block", "big"},
		WithHandlerTimeout(300*time.Millisecond), WithWriteTimeout(50*time.Millisecond), WithMaxConns(2, 2))
	start := time.Now()
	got, _ := readAll(t, cs[0])
	if bytes.HasSuffix(got, []byte("0000")) {
		t.Fatalf("a reply with a terminator after the handler deadline: %q", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the client waited %v", d)
	}
	if err := <-causes; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the handler's cause: %v", err)
	}
	waitFor(t, func() bool { st := s.Stats(); return st.WriteTimeout == 1 && st.HandlerTimeout == 1 })
	// Both give their counts back (a moment after the stats count the
	// timeouts): two more then fit under the cap of two.
	waitFor(t, func() bool {
		s.adm.mu.Lock()
		defer s.adm.mu.Unlock()
		return s.adm.total == 0
	})
	for range 2 {
		c := dialRaw(t, s.Path())
		if _, err := c.Write(frame.AppendMessage(nil, []byte("big"))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return s.Stats().Requests == 4 })
	if st := s.Stats(); st.OverCap != 0 {
		t.Fatalf("a connection refused after the others ended: %+v", st)
	}
}

// TestPooledOneShotClose: Close ends a pooled one-shot handler that
// blocks (its context cancelled, its client told at once), and Shutdown
// lets one that finishes do so.
func TestPooledOneShotClose(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "finish" {
			time.Sleep(50 * time.Millisecond)
			return echoRaw(ctx, req, w)
		}
		<-ctx.Done()
		return ctx.Err()
	})
	s, cs, done := queuedShots(t, h, []string{"finish"})
	waitFor(t, func() bool { return s.Stats().Requests == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got, kind := readAll(t, cs[0]); string(got) != "000afinish0000" || kind != kindEOF {
		t.Fatalf("the reply finished under Shutdown: %q (%s)", got, kind)
	}
	if err := done(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}

	s2, cs2, done2 := queuedShots(t, h, []string{"block"})
	waitFor(t, func() bool { return s2.Stats().Requests == 1 })
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, cs2[0]); len(got) != 0 {
		t.Fatalf("a reply from a handler Close ended: %q", got)
	}
	if err := done2(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

// TestPooledOneShotHangUp: the handler of a client that hung up is
// cancelled (the reaper polls the descriptors no loop watches), while a
// client that only shut its writing side gets its reply.
func TestPooledOneShotHangUp(t *testing.T) {
	leakcheck.Check(t)
	causes := make(chan error, 1)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "half" {
			time.Sleep(50 * time.Millisecond) // the half close lands meanwhile
			return echoRaw(ctx, req, w)
		}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	})
	s, cs, _ := queuedShots(t, h, []string{"gone", "half"})
	if err := cs[1].CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return s.Stats().Requests == 2 })
	cs[0].Close()
	select {
	case err := <-causes:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("the cause: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler of a client that hung up was not cancelled")
	}
	if got, kind := readAll(t, cs[1]); string(got) != "0008half0000" || kind != kindEOF {
		t.Fatalf("after a half close: %q (%s)", got, kind)
	}
	if st := s.Stats(); st.OneShot != 2 {
		t.Fatalf("stats %+v: want both served one-shot", st)
	}
}

// Pooled git-style requests waiting for a worker are charged to the memory
// budget until their worker is done with them, and one the budget has no
// room for is closed without a reply.
func TestQueuedShotsInBudget(t *testing.T) {
	leakcheck.Check(t)
	reqs := make([]string, 40)
	for i := range reqs {
		reqs[i] = strings.Repeat("q", 60<<10)
	}
	// Every request is in its socket before Serve: each is whole when the
	// accept loop looks, and goes to the workers.
	s, cs, _ := queuedShots(t, HandlerFunc(func(ctx context.Context, _ []byte, w *ReplyWriter) error {
		<-ctx.Done()
		return ctx.Err()
	}), reqs, WithWorkers(1), WithMemoryBudget(1<<20))
	// 7/8 of 1 MiB holds at most 14 copies of 60 KiB: the rest are closed.
	waitFor(t, func() bool { st := s.Stats(); return st.OneShot+st.BudgetClosed == 40 })
	st := s.Stats()
	if st.BudgetClosed < 40-14 || st.Buffered < 60<<10 || st.Buffered > 7<<20/8 {
		t.Fatalf("40 requests of 60 KiB queued with a budget of 1 MiB: %d closed for the budget, %d bytes charged", st.BudgetClosed, st.Buffered)
	}
	for _, c := range cs {
		c.Close()
	}
	waitFor(t, func() bool { return s.Stats().Buffered == 0 })
}

// Shutdown lets the git-style request in progress finish and closes the
// ones still queued for a worker unserved, as git closes the connections
// it has not started on.
func TestShutdownClosesQueuedShots(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	var calls atomic.Int32
	s, cs, wait := queuedShots(t, HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if calls.Add(1) == 1 {
			<-release
		}
		_, err := w.Write(req)
		return err
	}), []string{"first", "q1", "q2", "q3"}, WithWorkers(1))
	waitFor(t, func() bool { return s.Stats().Requests == 4 && calls.Load() == 1 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	waitFor(t, func() bool { return s.stopping.Load() })
	close(release)
	for i, c := range cs {
		got, _ := readAll(t, c)
		want := []byte(nil)
		if i == 0 {
			want = frame.AppendMessage(nil, []byte("first"))
		}
		if !bytes.Equal(got, want) {
			t.Errorf("client %d got %q, want %q", i, got, want)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want once", n)
	}
	if err := wait(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}
