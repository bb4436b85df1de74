//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package engine

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/ring"
)

// withRings is the server option of the tests that use rings.
var withRings = WithRingLimits(64, 1<<20)

func dialRings(t testing.TB, path string, opts ...ClientOption) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path, append([]ClientOption{WithRings(1 << 16)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// callEcho calls c with a request of each size, against an echo
// handler, and checks each reply.
func callEcho(t *testing.T, c *Client, sizes ...int) {
	t.Helper()
	for i, n := range sizes {
		req := pattern(n, i)
		got, err := c.Call(req)
		if err != nil {
			t.Fatalf("Call(%d bytes): %v", n, err)
		}
		if !bytes.Equal(got, req) {
			t.Fatalf("Call(%d bytes): reply of %d bytes differs", n, len(got))
		}
	}
}

func TestRingsRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	c := dialRings(t, ts.path)
	if !c.Rings() || !c.Persistent() {
		t.Fatalf("Rings() = %v, Persistent() = %v; want both true", c.Rings(), c.Persistent())
	}
	// Sizes around a record (32 KiB less a header in a 64 KiB ring) and
	// far beyond the ring, which stream through it in pieces.
	callEcho(t, c, 0, 1, 64, 4096, 32<<10-8, 32<<10-7, 1<<16, 1<<20+3)
	c.Close()
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
}

// TestRingsReplyInPlace: a handler that builds its reply with Reserve and
// Commit, in parts, some larger than a record.
func TestRingsReplyInPlace(t *testing.T) {
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		for _, part := range bytes.Split(req, []byte(",")) {
			p, err := w.Reserve(len(part) + 10)
			if err != nil {
				return err
			}
			if err := w.Commit(copy(p, part)); err != nil {
				return err
			}
		}
		p, _ := w.Reserve(5) // dropped: no Commit
		copy(p, "XXXXX")
		return nil
	})
	ts := startServer(t, h, withRings)
	for _, rings := range []bool{true, false} {
		opts := []ClientOption{}
		if rings {
			opts = append(opts, WithRings(1<<16))
		}
		c, err := Dial(context.Background(), ts.path, opts...)
		if err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte("b"), 100_000)
		req := append([]byte("one,two,,three,"), big...)
		got, err := c.Call(req)
		if want := append([]byte("onetwothree"), big...); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("rings %v: reply of %d bytes, %v; want %d bytes", rings, len(got), err, len(want))
		}
		c.Close()
	}
}

// TestRingsClientInPlace: with WithRingRepliesInPlace, a reply of one
// record is the ring's own memory, held until the next read; a longer one
// (beyond a record, or in pieces) is gathered as before; and a reply in
// place stays as it was while later requests go out.
func TestRingsClientInPlace(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	c := dialRings(t, ts.path, WithRingRepliesInPlace())
	for i, tc := range []struct {
		n       int
		inPlace bool
	}{{0, true}, {1, true}, {4096, true}, {32<<10 - 8, true}, {32<<10 - 7, false}, {1<<20 + 3, false}, {64, true}} {
		req := pattern(tc.n, i)
		got, err := c.Call(req)
		if err != nil || !bytes.Equal(got, req) {
			t.Fatalf("Call(%d bytes): reply of %d bytes (differs: %v), %v", tc.n, len(got), !bytes.Equal(got, req), err)
		}
		if held := c.rlease.Load() == leaseHeld; held != tc.inPlace {
			t.Fatalf("Call(%d bytes): reply in place %v, want %v", tc.n, held, tc.inPlace)
		}
	}
	first, err := c.Call([]byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := c.Send(fmt.Appendf(nil, "later %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if string(first) != "first" {
		t.Fatalf("a reply in place changed to %q while later requests went out", first)
	}
	for i := range 20 {
		if got, err := c.Recv(); err != nil || string(got) != fmt.Sprintf("later %d", i) {
			t.Fatalf("Recv = %q, %v", got, err)
		}
	}
	// A reply of several records (the handler writes twice) is gathered.
	ts2 := startServer(t, HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		w.Write(req[:1])
		_, err := w.Write(req[1:])
		return err
	}), withRings)
	c2 := dialRings(t, ts2.path, WithRingRepliesInPlace())
	if got, err := c2.Call([]byte("two parts")); err != nil || string(got) != "two parts" || c2.rlease.Load() != leaseNone {
		t.Fatalf("Call = %q, %v, in place %v; want \"two parts\" gathered", got, err, c2.rlease.Load() == leaseHeld)
	}
}

// TestRingsInPlaceClose: Close gives back the record of a reply held in
// place, whether the owner calls it or another goroutine does while the
// owner is between calls or in one, and the rings are unmapped.
func TestRingsInPlaceClose(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "slow" {
			time.Sleep(50 * time.Millisecond)
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, withRings)
	maps := func() int {
		b, _ := os.ReadFile("/proc/self/maps")
		return bytes.Count(b, []byte("memfd:"))
	}
	for _, how := range []string{"owner", "other", "during"} {
		c := dialRings(t, ts.path, WithRingRepliesInPlace())
		if got, err := c.Call([]byte("held")); err != nil || string(got) != "held" || c.rlease.Load() != leaseHeld {
			t.Fatalf("%s: Call = %q, %v, in place %v", how, got, err, c.rlease.Load() == leaseHeld)
		}
		switch how {
		case "owner":
			c.Close()
		case "other":
			done := make(chan struct{})
			go func() { c.Close(); close(done) }()
			<-done
			if _, err := c.Call([]byte("x")); !errors.Is(err, ErrClientClosed) {
				t.Fatalf("%s: Call after Close: %v", how, err)
			}
		case "during":
			if err := c.Send([]byte("slow")); err != nil {
				t.Fatal(err)
			}
			go func() { time.Sleep(10 * time.Millisecond); c.Close() }()
			if _, err := c.Recv(); !errors.Is(err, ErrClientClosed) {
				t.Fatalf("%s: Recv across Close: %v", how, err)
			}
		}
		if c.rlease.Load() == leaseHeld {
			t.Fatalf("%s: the reply's record is still held after Close", how)
		}
		waitFor(t, func() bool { return ts.Stats().Open == 0 })
		waitFor(t, func() bool { return maps() == 0 })
	}
}

// TestRingsInPlaceOutlivesConnection: a reply held in place stays mapped,
// and unchanged, when its connection ends and a Send reconnects, until
// the next Recv; then its ring is unmapped.
func TestRingsInPlaceOutlivesConnection(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings, WithIdleTimeout(100*time.Millisecond))
	maps := func() int {
		b, _ := os.ReadFile("/proc/self/maps")
		return bytes.Count(b, []byte("memfd:"))
	}
	c := dialRings(t, ts.path, WithRingRepliesInPlace())
	held, err := c.Call([]byte("held reply"))
	if err != nil || string(held) != "held reply" || c.rlease.Load() != leaseHeld {
		t.Fatalf("Call = %q, %v, in place %v", held, err, c.rlease.Load() == leaseHeld)
	}
	// The timeout is counted before the connection is closed: wait for
	// both, or the Send could go out on the connection as it ends.
	waitFor(t, func() bool { st := ts.Stats(); return st.IdleTimeout >= 1 && st.Open == 0 })
	if err := c.Send([]byte("next")); err != nil { // finds the connection gone, reconnects
		t.Fatal(err)
	}
	if string(held) != "held reply" {
		t.Fatalf("the held reply reads %q after a reconnect", held)
	}
	if got, err := c.Recv(); err != nil || string(got) != "next" {
		t.Fatalf("Recv = %q, %v", got, err)
	}
	c.Close()
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	waitFor(t, func() bool { return maps() == 0 })

	// The server gone for good: the Send that finds the connection gone
	// cannot reconnect, and Close, with no connection left, still gives
	// the held reply's ring back.
	c = dialRings(t, ts.path, WithRingRepliesInPlace())
	if held, err = c.Call([]byte("held reply")); err != nil || c.rlease.Load() != leaseHeld {
		t.Fatalf("Call = %q, %v, in place %v", held, err, c.rlease.Load() == leaseHeld)
	}
	ts.Close()
	if err := c.Send([]byte("next")); err == nil {
		t.Fatal("Send succeeded with the server gone")
	}
	if string(held) != "held reply" {
		t.Fatalf("the held reply reads %q after its connection ended", held)
	}
	c.Close()
	waitFor(t, func() bool { return maps() == 0 })
}

func TestRingsPipelined(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		t.Run(fmt.Sprintf("inplace=%v", inPlace), func(t *testing.T) { testRingsPipelined(t, inPlace) })
	}
}

func testRingsPipelined(t *testing.T, inPlace bool) {
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	var opts []ClientOption
	if inPlace {
		opts = append(opts, WithRingRepliesInPlace())
	}
	c := dialRings(t, ts.path, opts...)
	for round := range 20 {
		const window = 40
		for i := range window {
			if err := c.Send(fmt.Appendf(nil, "r%d-%d", round, i)); err != nil {
				t.Fatal(err)
			}
		}
		for i := range window {
			got, err := c.Recv()
			if want := fmt.Sprintf("r%d-%d", round, i); err != nil || string(got) != want {
				t.Fatalf("Recv = %q, %v; want %q", got, err, want)
			}
		}
	}
}

// TestRingsRestartNeverMisattributes: requests in flight when the server
// goes away fail, typed; after a restart the Client is on rings again and
// every reply is its own request's.
func TestRingsRestartNeverMisattributes(t *testing.T) {
	path := socketPath(t)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		_, err := w.Write(req)
		return err
	})
	s := serveAt(t, path, h, withRings)
	c := dialRings(t, path)
	for _, r := range []string{"slow", "B", "C"} {
		if err := c.Send([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	s.close(t)
	close(release)
	serveAt(t, path, h, withRings)
	for _, r := range []string{"slow", "B", "C"} {
		if got, err := c.Recv(); !errors.Is(err, ErrIncompleteReply) {
			t.Fatalf("Recv for %s after the server closed = %q, %v; want ErrIncompleteReply", r, got, err)
		}
	}
	for i := range 50 {
		want := fmt.Sprintf("after-%d", i)
		got, err := c.Call([]byte(want))
		if err != nil || string(got) != want {
			t.Fatalf("Call = %q, %v; want %q", got, err, want)
		}
	}
	if !c.Rings() {
		t.Fatal("no rings after the restart")
	}
}

// TestRingsDeclined: a server that refuses rings, or has none left,
// serves the client over the socket; a server that does not know them
// (git's) serves it one connection per request.
func TestRingsDeclined(t *testing.T) {
	leakcheck.Check(t)
	t.Run("refused", func(t *testing.T) {
		ts := startServer(t, HandlerFunc(echoRaw)) // rings are opt-in
		c := dialRings(t, ts.path)
		if c.Rings() || !c.Persistent() {
			t.Fatalf("Rings() = %v, Persistent() = %v; want false, true", c.Rings(), c.Persistent())
		}
		if got, err := c.Call([]byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("Call = %q, %v", got, err)
		}
	})
	t.Run("cap", func(t *testing.T) {
		ts := startServer(t, HandlerFunc(echoRaw), WithRingLimits(1, 1<<16))
		a := dialRings(t, ts.path)
		b := dialRings(t, ts.path)
		if !a.Rings() || b.Rings() || !b.Persistent() {
			t.Fatalf("first Rings() = %v, second Rings() = %v; want true, false", a.Rings(), b.Rings())
		}
		if got, err := b.Call([]byte("y")); err != nil || string(got) != "y" {
			t.Fatalf("Call = %q, %v", got, err)
		}
		a.Close()
		waitFor(t, func() bool { return ts.Stats().Open == 1 })
		if c := dialRings(t, ts.path); !c.Rings() {
			t.Fatal("a freed ring place was not given again")
		}
	})
	t.Run("git", func(t *testing.T) {
		ts := startServer(t, HandlerFunc(echo), WithPersistent(false))
		c := dialRings(t, ts.path)
		if c.Rings() || c.Persistent() {
			t.Fatalf("Rings() = %v, Persistent() = %v against git's behaviour", c.Rings(), c.Persistent())
		}
		for i := range 3 {
			if got, err := c.Call(fmt.Append(nil, i)); err != nil || string(got) != fmt.Sprint("re:", i) {
				t.Fatalf("Call = %q, %v", got, err)
			}
		}
	})
}

// TestRingsBesideOtherClients: git-style, persistent socket and ring
// clients are served together by one server.
func TestRingsBesideOtherClients(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for kind := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *Client
			if kind > 0 {
				opts := []ClientOption{}
				if kind == 2 {
					opts = append(opts, WithRings(1<<16))
				}
				var err error
				if c, err = Dial(context.Background(), ts.path, opts...); err != nil {
					errs <- err
					return
				}
				defer c.Close()
				if c.Rings() != (kind == 2) {
					errs <- fmt.Errorf("kind %d: Rings() = %v", kind, c.Rings())
					return
				}
			}
			for i := range 200 {
				req := fmt.Appendf(nil, "%d:%d", kind, i)
				var got []byte
				var err error
				if c == nil {
					got, err = Send(context.Background(), ts.path, req)
				} else {
					got, err = c.Call(req)
				}
				if err != nil || !bytes.Equal(got, req) {
					errs <- fmt.Errorf("kind %d: %q, %v", kind, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRingsPeerGone: each side notices the other's end through the
// socket at once, not at a timeout.
func TestRingsPeerGone(t *testing.T) {
	leakcheck.Check(t)
	ts := startBlockingServer(t, false)
	c := dialRings(t, ts.path)
	if _, err := c.Call([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitWithin(t, time.Second, func() bool { return ts.Stats().Open == 0 })

	c = dialRings(t, ts.path)
	if err := c.Send([]byte("block")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Recv(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	go ts.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrIncompleteReply) {
			t.Fatalf("Recv while the server closed: %v, want ErrIncompleteReply", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("the client noticed after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still waits after the server closed")
	}
}

// TestRingsBounds: the request size cap, a handler's panic, the idle,
// handler and write deadlines end a ring connection as they end a socket
// one; the client's next call reconnects where that is safe.
func TestRingsBounds(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		switch {
		case string(req) == "panic":
			panic("handler panic")
		case string(req) == "hang":
			<-ctx.Done()
			return ctx.Err()
		case bytes.HasPrefix(req, []byte("big")):
			_, err := w.Write(make([]byte, 60_000))
			return err
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, withRings, WithMaxRequestSize(40_000), WithIdleTimeout(200*time.Millisecond),
		// The write deadline shorter than the handler's: a wait for room
		// runs under whichever ends first.
		WithHandlerTimeout(200*time.Millisecond), WithWriteTimeout(100*time.Millisecond))
	c := dialRings(t, ts.path)
	for _, n := range []int{40_001, 100_000} { // one record; several
		// The server closes when it sees the request is too large: while
		// the client still writes it (not processed), or after.
		if _, err := c.Call(make([]byte, n)); !errors.Is(err, ErrIncompleteReply) && !errors.Is(err, ErrNotProcessed) {
			t.Fatalf("Call(%d bytes over the cap) = %v, want ErrIncompleteReply or ErrNotProcessed", n, err)
		}
	}
	// A request refused while it was being written was not processed,
	// so the client tries it once more on a new connection: 2 or 3.
	if got := ts.Stats().ProtocolErrors; got < 2 || got > 3 {
		t.Fatalf("ProtocolErrors = %d, want 2 or 3", got)
	}
	if _, err := c.Call([]byte("panic")); !errors.Is(err, ErrIncompleteReply) {
		t.Fatalf("Call(panic) = %v, want ErrIncompleteReply", err)
	}
	if _, err := c.Call([]byte("hang")); !errors.Is(err, ErrIncompleteReply) {
		t.Fatalf("Call(hang) = %v, want ErrIncompleteReply", err)
	}
	if got := ts.Stats().HandlerTimeout; got != 1 {
		t.Fatalf("HandlerTimeout = %d, want 1", got)
	}
	// Replies the client does not read fill the reply ring; the server
	// waits for room until the write deadline.
	for range 8 {
		if err := c.Send([]byte("big")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return ts.Stats().WriteTimeout == 1 })
	for range 8 {
		_, _ = c.Recv()
	}
	if got, err := c.Call([]byte("after")); err != nil || string(got) != "after" {
		t.Fatalf("Call after the write timeout = %q, %v", got, err)
	}
	waitFor(t, func() bool { return ts.Stats().IdleTimeout >= 1 && ts.Stats().Open == 0 })
	if got, err := c.Call([]byte("again")); err != nil || string(got) != "again" || !c.Rings() {
		t.Fatalf("Call after the idle timeout = %q, %v (rings %v)", got, err, c.Rings())
	}
}

// TestRingsGatherBudget: a request that spans records is gathered into a
// buffer charged to the memory budget. One the budget has room for is
// served, and its buffer given back after it; one it has no room for
// closes its connection (BudgetClosed) before it is gathered whole.
func TestRingsGatherBudget(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings, WithMemoryBudget(1<<20), WithMaxRequestSize(4<<20))
	c := dialRings(t, ts.path) // 64 KiB rings: records of up to 32 KiB
	req := pattern(512<<10, 1)
	if got, err := c.Call(req); err != nil || !bytes.Equal(got, req) {
		t.Fatalf("Call(512 KiB) = %d bytes, %v", len(got), err)
	}
	if st := ts.Stats(); st.Buffered != 0 || st.BudgetClosed != 0 {
		t.Fatalf("after a 512 KiB request within the budget: Buffered %d, BudgetClosed %d; want 0, 0", st.Buffered, st.BudgetClosed)
	}
	// The server closes when the buffer would pass the budget: while the
	// client still writes (not processed, and sent once more on a new
	// connection), or after.
	if _, err := c.Call(pattern(2<<20, 2)); !errors.Is(err, ErrIncompleteReply) && !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Call(2 MiB beyond the budget) = %v, want ErrIncompleteReply or ErrNotProcessed", err)
	}
	if got := ts.Stats().BudgetClosed; got < 1 || got > 2 {
		t.Fatalf("BudgetClosed = %d, want 1 or 2", got)
	}
	if got, err := c.Call([]byte("after")); err != nil || string(got) != "after" {
		t.Fatalf("Call after the refusal = %q, %v", got, err)
	}
	c.Close()
	waitFor(t, func() bool { st := ts.Stats(); return st.Open == 0 && st.Buffered == 0 })
}

// TestRingsShutdown: Shutdown closes idle ring connections at once and
// lets a request in progress finish.
func TestRingsShutdown(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	s, err := NewServer(path, HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "slow" {
			time.Sleep(100 * time.Millisecond)
		}
		_, err := w.Write(req)
		return err
	}), withRings)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background()) }()
	idle := dialRings(t, path)
	busy := dialRings(t, path)
	if err := busy.Send([]byte("slow")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got, err := busy.Recv(); err != nil || string(got) != "slow" {
		t.Fatalf("the request in progress got %q, %v", got, err)
	}
	if _, err := idle.Call([]byte("x")); err == nil {
		t.Fatal("an idle ring client was served after Shutdown")
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
}

// TestRingsQuit: a handler's ErrQuit on a ring connection stops the
// server after the reply.
func TestRingsQuit(t *testing.T) {
	path := socketPath(t)
	s, err := NewServer(path, HandlerFunc(gitDaemon), withRings)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background()) }()
	c := dialRings(t, path)
	if _, err := c.Call([]byte("quit")); err != nil {
		t.Fatalf("quit: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not stop")
	}
}

// rawRings performs the ring handshake by hand, waiting first so that the
// connection joins an event loop before the handshake arrives, and
// returns the socket and the two memfds.
func rawRings(t *testing.T, path string, wait time.Duration) (*net.UnixConn, *os.File, *os.File) {
	t.Helper()
	uc := dialRaw(t, path)
	time.Sleep(wait)
	if _, err := uc.Write(frame.AppendMessage(nil, []byte("\x01pktipc/rings/1 65536"))); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if want := frame.AppendMessage(nil, ringOKReply); !bytes.Equal(buf[:n], want) {
		t.Fatalf("handshake reply %q, want %q", buf[:n], want)
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil || len(fds) != 2 {
		t.Fatalf("descriptors %v, %v", fds, err)
	}
	req, rep := os.NewFile(uintptr(fds[0]), "req"), os.NewFile(uintptr(fds[1]), "rep")
	t.Cleanup(func() { req.Close(); rep.Close() })
	return uc, req, rep
}

// rawRingPeer is a ring client without engine.Client: the handshake by
// hand (rawRings), the request ring's writer and the reply ring's reader,
// both closed when the test ends (the caller may close them sooner).
func rawRingPeer(t *testing.T, path string) (*net.UnixConn, *ring.Writer, *ring.Reader) {
	t.Helper()
	uc, reqF, repF := rawRings(t, path, 0)
	w, err := ring.NewWriter(reqF, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ring.NewReader(repF, nil)
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); r.Close() })
	return uc, w, r
}

// TestRingsLateHandshake: a handshake that comes after the connection
// joined an event loop still moves it to rings, and the rings work with
// a peer that is not engine.Client (futex waits on its side).
func TestRingsLateHandshake(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	uc, reqF, repF := rawRings(t, ts.path, 50*time.Millisecond)
	bell, err := uc.File()
	if err != nil {
		t.Fatal(err)
	}
	defer bell.Close()
	w, err := ring.NewWriter(reqF, &ring.Options{Doorbell: bell})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := ring.NewReader(repF, &ring.Options{Doorbell: bell})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 10 {
		msg := fmt.Appendf(nil, "late %d", i)
		if err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadMessage(nil, 1<<20)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("reply %q, %v; want %q", got, err, msg)
		}
	}
}

// TestRingsHostileClient: a client that writes garbage into the shared
// header and records makes the server close its connection with a
// protocol error, never crash or hang, and the server serves others.
func TestRingsHostileClient(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	for round := range 20 {
		uc, reqF, _ := rawRings(t, ts.path, 0)
		m, err := syscall.Mmap(int(reqF.Fd()), 0, 4096+65536, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		for i := range m {
			m[i] = byte(i*31 + round)
		}
		_, _ = uc.Write([]byte{1}) // ring the server's doorbell
		_ = syscall.Munmap(m)
		uc.SetReadDeadline(time.Now().Add(10 * time.Second))
		readAll(t, uc) // doorbell bytes, then the server's close
		uc.Close()
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	if got := ts.Stats().ProtocolErrors; got == 0 {
		t.Fatal("no protocol error counted for corrupt rings")
	}
	c := dialRings(t, ts.path)
	if got, err := c.Call([]byte("still")); err != nil || string(got) != "still" {
		t.Fatalf("Call = %q, %v", got, err)
	}
}

// TestRingsSetupTeardown: ring connections opened and closed many times
// leave no descriptor, mapping or goroutine behind.
func TestRingsSetupTeardown(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	maps := func() int {
		b, _ := os.ReadFile("/proc/self/maps")
		return bytes.Count(b, []byte("memfd:"))
	}
	n := 300
	if testing.Short() {
		n = 50
	}
	for i := range n {
		c, err := Dial(context.Background(), ts.path, WithRings(1<<16))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Call([]byte("x")); err != nil || string(got) != "x" || !c.Rings() {
			t.Fatalf("round %d: %q, %v, rings %v", i, got, err, c.Rings())
		}
		c.Close()
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	waitFor(t, func() bool { return maps() == 0 })
}

// cpuTime is the process's user and system time so far.
func cpuTime(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestRingsIdleCostsNothing: ring connections waiting for requests, and
// clients waiting for replies, are parked in the netpoller: the process
// (server and clients together) uses next to no CPU while they wait.
func TestRingsIdleCostsNothing(t *testing.T) {
	leakcheck.Check(t)
	block := make(chan struct{})
	ts := startServer(t, HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "wait" {
			<-block
		}
		_, err := w.Write(req)
		return err
	}), withRings)
	var clients []*Client
	for range 20 {
		c := dialRings(t, ts.path)
		if _, err := c.Call([]byte("warm")); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	var wg sync.WaitGroup
	for _, c := range clients[:10] { // these wait for a reply, the rest for nothing
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := c.Call([]byte("wait")); err != nil || string(got) != "wait" {
				t.Errorf("Call = %q, %v", got, err)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // past every spin
	idle := time.Second
	before := cpuTime(t)
	time.Sleep(idle)
	used := cpuTime(t) - before
	close(block)
	wg.Wait()
	t.Logf("CPU over %v idle with 20 ring connections: %v", idle, used)
	if used > 30*time.Millisecond {
		t.Errorf("idle ring connections used %v of CPU in %v, want next to none", used, idle)
	}
}

// TestRingsCutRepliesNeverWhole: a reply that its handler could not finish
// (the handler timed out, or panicked, after writing part of it) never
// reaches the client as a whole reply, and leaves nothing mapped or open.
func TestRingsCutRepliesNeverWhole(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if _, err := w.Write([]byte("partial")); err != nil {
			return err
		}
		if string(req) == "panic" {
			panic("after a part of the reply")
		}
		<-ctx.Done() // the handler timeout
		p, err := w.Reserve(4)
		if err == nil {
			err = w.Commit(copy(p, "more"))
		}
		return err
	})
	ts := startServer(t, h, withRings, WithHandlerTimeout(50*time.Millisecond))
	for _, req := range []string{"hang", "panic", "hang", "panic"} {
		c := dialRings(t, ts.path)
		if err := c.Send([]byte(req)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // the reply, such as it is, is all there
		if got, err := c.Recv(); !errors.Is(err, ErrIncompleteReply) {
			t.Fatalf("%s: Recv = %q, %v; want ErrIncompleteReply", req, got, err)
		}
		c.Close()
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	b, _ := os.ReadFile("/proc/self/maps")
	waitFor(t, func() bool { b, _ = os.ReadFile("/proc/self/maps"); return !bytes.Contains(b, []byte("memfd:")) })
}

// TestRingsMappedAfterClose: rings that a handshake maps after Close has
// run (Close found none to close) are closed at once, not installed on a
// Client that no call will use again: no mapping stays.
func TestRingsMappedAfterClose(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	c, err := Dial(context.Background(), ts.path) // no rings: the handshake is done by hand
	if err != nil {
		t.Fatal(err)
	}
	memfds := func() int {
		b, _ := os.ReadFile("/proc/self/maps")
		return bytes.Count(b, []byte("memfd:pktipc-ring"))
	}
	before := memfds()
	var fds []int
	for range 2 {
		f, err := ring.Create(1 << 16)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := syscall.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	defer closeFDs(fds)
	c.closed.Store(true) // Close ran during the handshake, with no rings to close
	if err := c.mapRings(fds); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("mapRings after Close = %v, want ErrClientClosed", err)
	}
	if c.rout != nil || c.rin != nil {
		t.Fatal("rings installed on a closed Client")
	}
	if n := memfds(); n != before {
		t.Fatalf("%d ring mappings after the refused handshake, %d before", n, before)
	}
	c.closed.Store(false)
	c.Close()
}

// TestRingsCloseDuringCalls: Close from another goroutine while the owner
// is in Send or Recv ends the call with ErrClientClosed, never a panic,
// also with replies held in place (every other round).
func TestRingsCloseDuringCalls(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	for i := range 50 {
		var opts []ClientOption
		if i%2 == 1 {
			opts = append(opts, WithRingRepliesInPlace())
		}
		c := dialRings(t, ts.path, opts...)
		done := make(chan error, 1)
		go func() {
			req := make([]byte, 1000*(i%5))
			for {
				if _, err := c.Call(req); err != nil {
					done <- err
					return
				}
			}
		}()
		time.Sleep(time.Duration(i%7) * 100 * time.Microsecond)
		c.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClientClosed) {
				t.Fatalf("round %d: the call after Close: %v, want ErrClientClosed", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call outlived Close")
		}
	}
}

// TestRingsLateHandshakeUnderCaps: a connection that moves to rings keeps
// its own place under the caps: nobody else is evicted for it.
func TestRingsLateHandshakeUnderCaps(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings, WithMaxConns(100, 2))
	silent := dialRaw(t, ts.path)
	waitFor(t, func() bool { return ts.Stats().Open == 1 })
	uc, _, _ := rawRings(t, ts.path, 50*time.Millisecond)
	defer uc.Close()
	waitFor(t, func() bool { return ts.Stats().Open == 2 })
	if got := ts.Stats().Evicted; got != 0 {
		t.Fatalf("Evicted = %d: a connection lost its place to one moving to rings", got)
	}
	silent.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the silent connection was closed: %v", err)
	}
}

// TestRingsReserveMixed: a ring record reserved and abandoned, then a
// buffer larger than a record (a scratch buffer), then a record again: the
// reply holds exactly what was committed.
func TestRingsReserveMixed(t *testing.T) {
	big := bytes.Repeat([]byte("B"), 100_000)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if _, err := w.Reserve(10); err != nil { // abandoned
			return err
		}
		p, err := w.Reserve(len(big))
		if err != nil {
			return err
		}
		if err := w.Commit(copy(p, big)); err != nil {
			return err
		}
		p, err = w.Reserve(3)
		if err != nil {
			return err
		}
		return w.Commit(copy(p, "end"))
	})
	ts := startServer(t, h, withRings)
	c := dialRings(t, ts.path)
	got, err := c.Call([]byte("x"))
	if want := append(append([]byte(nil), big...), "end"...); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reply of %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
}

// TestReaperNapsAndHurries: with only idle connections (a socket one and a
// ring one) the reaper naps instead of ticking, and a new connection's
// short first-byte deadline still fires on time: starting it wakes the
// reaper.
func TestReaperNapsAndHurries(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings, WithFirstByteTimeout(time.Second))
	sc, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rc := dialRings(t, ts.path)
	for _, c := range []*Client{sc, rc} {
		if _, err := c.Call([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return ts.napping.Load() })
	start := time.Now()
	silent := dialRaw(t, ts.path)
	if _, kind := readAll(t, silent); kind != kindEOF {
		t.Fatalf("the silent connection ended with %s", kind)
	}
	// The nap is 5 s; the deadline 1 s, checked at ticks of 50 ms.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a 1 s first-byte deadline fired after %v: the reaper napped through it", d)
	}
	if got := ts.Stats().FirstByteTimeout; got != 1 {
		t.Fatalf("FirstByteTimeout = %d, want 1", got)
	}
}

// TestRingsFlickeringClient: a client that keeps sealing and clearing the
// header word at the request ring's start, so that the server sees a
// record when it looks and none when it takes, ends its connection
// instead of keeping a server goroutine looping: on the stale limit, or
// on the record's unknown flags when a take catches it.
func TestRingsFlickeringClient(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	uc, reqF, _ := rawRings(t, ts.path, 0)
	m, err := syscall.Mmap(int(reqF.Fd()), 0, 8192, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	// The first record's header (ring/layout.go): no payload, a flag
	// the ring does not know, and the seal of the first lap.
	word := (*atomic.Uint64)(unsafe.Pointer(&m[4096]))
	const sealed = uint64(8|0x8000<<16) << 32
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			word.Store(sealed * (i & 1))
			if i%1024 == 0 {
				_, _ = uc.Write([]byte{1})
			}
		}
	}()
	_ = uc.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, kind := readAll(t, uc)
	close(stop)
	<-done
	if kind != kindEOF && kind != kindReset {
		t.Fatalf("the connection ended with %s", kind)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	if ts.Stats().ProtocolErrors == 0 {
		t.Fatal("a flickering ring was not counted as a protocol error")
	}
}

// TestRingSleepSlot: only a lone wait sleeps on a ring's futex, and no
// more of them at once than the budget.
func TestRingSleepSlot(t *testing.T) {
	if ringSleepSlot(2, 2) {
		ringSleepers.Add(-1)
		t.Fatal("a wait slept with another wait under way")
	}
	if !ringSleepSlot(1, 1) {
		t.Fatal("a lone wait could not sleep")
	}
	if ringSleepSlot(1, 1) {
		ringSleepers.Add(-1)
		t.Fatal("two waits slept with a budget of one")
	}
	ringSleepers.Add(-1)
	if !ringSleepSlot(1, 0) {
		t.Fatal("the place given back was not free again")
	}
	ringSleepers.Add(-1)
}

// TestRingsSleepThenSocket: with spinning off on both sides, a wait
// sleeps on the ring's futex and, when the peer takes longer than the
// sleep, on the socket; replies are right either way, a deadline shorter
// than the sleep ends it, and the server's end wakes a sleeping client.
func TestRingsSleepThenSocket(t *testing.T) {
	leakcheck.Check(t)
	block, block2 := make(chan struct{}), make(chan struct{})
	defer close(block2)
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		switch string(req) {
		case "slow":
			time.Sleep(3 * ringSleep)
		case "block":
			select {
			case <-block:
			case <-ctx.Done():
			}
		case "block2":
			select {
			case <-block2:
			case <-ctx.Done():
			}
		}
		_, err := w.Write(req)
		return err
	}), withRings, WithRingSpin(0))
	c := dialRings(t, ts.path, WithClientSpin(0))
	for i := range 200 {
		req := []byte(strconv.Itoa(i))
		if i%50 == 49 {
			req = []byte("slow")
		}
		got, err := c.Call(req)
		if err != nil || string(got) != string(req) {
			t.Fatalf("Call %d = %q, %v", i, got, err)
		}
	}
	c.SetDeadline(time.Now().Add(ringSleep / 4))
	if _, err := c.Call([]byte("block")); !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call past its deadline: %v", err)
	}
	close(block)
	c.SetDeadline(time.Time{})
	c2 := dialRings(t, ts.path, WithClientSpin(0))
	if _, err := c2.Call([]byte("warm")); err != nil {
		t.Fatal(err)
	}
	// The server's Close closes its rings, which wakes a client asleep
	// on one at once, not at the end of its sleep (nor a slice later).
	if err := c2.Send([]byte("block2")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c2.Recv(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	go ts.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrIncompleteReply) {
			t.Fatalf("Recv while the server closed: %v, want ErrIncompleteReply", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still waits after the server closed")
	}
	if n := ringSleepers.Load(); n != 0 {
		t.Fatalf("%d sleeper places still taken", n)
	}
}

// TestRingsQueue: on rings, Queue leaves requests unpublished until
// Flush, Recv, Send or a full batch publishes them together; large
// requests go out at once; replies come in order either way.
func TestRingsQueue(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	c := dialRings(t, ts.path) // 64 KiB rings: a batch is a record, 32 KiB less a header
	if _, err := c.Call([]byte("warm")); err != nil {
		t.Fatal(err)
	}
	served := func() uint64 { return ts.Stats().Requests }
	base := served()
	for i := range 50 {
		if err := c.Queue(pattern(64, i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n := served() - base; n != 0 {
		t.Fatalf("%d queued requests reached the server before Flush", n)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		got, err := c.Recv()
		if err != nil || !bytes.Equal(got, pattern(64, i)) {
			t.Fatalf("Recv %d = %d bytes, %v", i, len(got), err)
		}
	}

	// Recv publishes what is queued; so does a Send after it.
	if err := c.Queue([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Recv(); err != nil || string(got) != "a" {
		t.Fatalf("Recv after Queue = %q, %v", got, err)
	}
	if err := c.Queue([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := c.Send([]byte("c")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"b", "c"} {
		if got, err := c.Recv(); err != nil || string(got) != want {
			t.Fatalf("Recv = %q, %v; want %q", got, err, want)
		}
	}

	// A full batch is published without Flush; a request larger than a
	// record is sent at once, with the batch before it.
	base = served()
	const n = 20 // 20 of 2 KiB pass the 32 KiB batch
	for i := range n {
		if err := c.Queue(pattern(2048, i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return served()-base >= 10 })
	big := pattern(40<<10, 99)
	if err := c.Queue(big); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return served()-base == n+1 })
	for i := range n {
		if got, err := c.Recv(); err != nil || !bytes.Equal(got, pattern(2048, i)) {
			t.Fatalf("Recv %d = %d bytes, %v", i, len(got), err)
		}
	}
	if got, err := c.Recv(); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Recv of the large request = %d bytes, %v", len(got), err)
	}
	if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("Recv with nothing sent: %v", err)
	}
}

// TestRingsQueueServerGone: requests queued (published or not) when the
// server goes away get an error from Recv, each in its turn, and none
// is left behind; a request queued then fails at once.
func TestRingsQueueServerGone(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	c := dialRings(t, ts.path)
	if _, err := c.Call([]byte("warm")); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := c.Queue(pattern(64, i)); err != nil {
			t.Fatal(err)
		}
	}
	ts.Close()
	for i := range 5 {
		if _, err := c.Recv(); err == nil {
			t.Fatalf("Recv %d after the server closed: no error", i)
		}
	}
	if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("Recv after the failed ones: %v, want ErrNoRequest", err)
	}
	if err := c.Queue([]byte("x")); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Queue with the server gone: %v, want ErrNotProcessed", err)
	}
}

var ringIdle = flag.Duration("ringidle", 10*time.Second, "how long BenchmarkRingsIdle stays idle")

// BenchmarkRingsIdle measures what ring connections cost while nothing
// happens: the CPU time of the server (a child process) and of this
// process (the clients) over -ringidle (10 s) with four Clients idle on
// their rings and four waiting for a reply that the server holds back
// for the whole time. Run it with -benchtime=1x.
func BenchmarkRingsIdle(b *testing.B) {
	path := socketPath(b)
	ch := startChild(b, path)
	idle := *ringIdle
	for range b.N {
		var clients []*Client
		for range 8 {
			c := dialRings(b, path)
			if _, err := c.Call([]byte("warm")); err != nil {
				b.Fatal(err)
			}
			clients = append(clients, c)
		}
		var wg sync.WaitGroup
		for _, c := range clients[4:] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Call([]byte("sleep " + (idle + 200*time.Millisecond).String())); err != nil {
					b.Error(err)
				}
			}()
		}
		time.Sleep(100 * time.Millisecond) // past every spin and sleep
		server0, client0 := taskCPU(b, ch.cmd.Process.Pid), cpuTime(b)
		time.Sleep(idle)
		server, client := taskCPU(b, ch.cmd.Process.Pid)-server0, cpuTime(b)-client0
		wg.Wait()
		for _, c := range clients {
			c.Close()
		}
		scale := float64(10*time.Second) / float64(idle) / float64(time.Millisecond)
		b.ReportMetric(float64(server)*scale, "server-ms/10s")
		b.ReportMetric(float64(client)*scale, "client-ms/10s")
	}
}

// taskCPU is the CPU time used so far by the threads of process pid, from
// their schedstat (nanoseconds; threads that ended are not counted).
func taskCPU(tb testing.TB, pid int) time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("no threads of process %d: %v", pid, err)
	}
	var sum time.Duration
	for _, p := range tasks {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		var ns int64
		if _, err := fmt.Sscan(string(data), &ns); err != nil {
			tb.Fatalf("%s: %q: %v", p, data, err)
		}
		sum += time.Duration(ns)
	}
	return sum
}

func TestParseRingHello(t *testing.T) {
	for _, tc := range []struct {
		msg string
		ask ringAsk
		ok  bool
	}{
		{"\x01pktipc/rings/1 65536", ringAsk{size: 65536}, true},
		{"\x01pktipc/rings/1 65536 inplace", ringAsk{size: 65536, inPlace: true}, true},
		{"\x01pktipc/rings/1  inplace", ringAsk{}, false},
		{"\x01pktipc/rings/1 inplace", ringAsk{}, false},
		{"\x01pktipc/rings/1 65536 inplace inplace", ringAsk{}, false},
		{"\x01pktipc/rings/1 65536inplace", ringAsk{}, false},
		{"\x01pktipc/rings/1 12", ringAsk{}, false},
		{"\x01pktipc/rings/1 99999999999", ringAsk{}, false},
		{"\x01pktipc/rings/1 -65536", ringAsk{}, false},
		{"\x01pktipc/rings/2 65536", ringAsk{}, false},
	} {
		ask, ok := parseRingHello([]byte(tc.msg))
		if ask != tc.ask || ok != tc.ok {
			t.Errorf("parseRingHello(%q) = %+v, %v; want %+v, %v", tc.msg, ask, ok, tc.ask, tc.ok)
		}
	}
}

// TestRingsPost: on rings a posted message is marked, its handler sees it
// as one-way, and nothing comes back; posts are staged until Flush or a
// full batch, also behind queued requests.
func TestRingsPost(t *testing.T) {
	leakcheck.Check(t)
	l := &postLog{}
	ts := startServer(t, l, withRings)
	c := dialRings(t, ts.path)
	testPost(t, c, l, true)

	base := ts.Stats().Requests
	for range 10 {
		if err := c.Post([]byte("staged")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n := ts.Stats().Requests - base; n != 0 {
		t.Fatalf("%d posted messages reached the server before Flush", n)
	}
	if err := c.Queue([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	if err := c.Post([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Recv(); err != nil || string(got) != "re:queued" {
		t.Fatalf("Recv = %q, %v", got, err)
	}
	waitFor(t, func() bool { return l.len() == 12 })
	// A full batch goes without Flush.
	for range 1000 {
		if err := c.Post(pattern(100, 1)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return l.len() >= 12+100 })
	if c.queue.n != 0 || c.inflight != 0 {
		t.Fatalf("posts left %d entries, %d in flight", c.queue.n, c.inflight)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return l.len() == 12+1000 })
	l.reset()

	// Rings from a server that answered a plain "ok" (no one-way
	// messages): posts are requests whose replies the Client drops.
	c.roneway = false
	testPost(t, c, l, false)
}

// TestRingsPostAfterReplyInPlace: posts that the server answers (rings
// without one-way messages) after a reply returned in place: the Client
// gives the reply's record back before it reads the posts' replies, and
// every message reaches the server, on one connection.
func TestRingsPostAfterReplyInPlace(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	c := dialRings(t, ts.path, WithRingRepliesInPlace())
	c.roneway = false // as from a server that answered a plain "ok"
	const rounds, posts = 3, postWindow + 10
	for range rounds {
		if got, err := c.Call([]byte("call")); err != nil || string(got) != "call" {
			t.Fatalf("Call = %q, %v", got, err)
		}
		for i := range posts {
			if err := c.Post([]byte("post")); err != nil {
				t.Fatalf("Post %d: %v", i, err)
			}
		}
	}
	if got, err := c.Call([]byte("last")); err != nil || string(got) != "last" {
		t.Fatalf("last Call = %q, %v", got, err)
	}
	if st := ts.Stats(); st.Requests != rounds*(1+posts)+1 || st.Accepted != 1 {
		t.Fatalf("the server took %d requests on %d connections, want %d on 1", st.Requests, st.Accepted, rounds*(1+posts)+1)
	}
}

// TestRingsRepliesFillBothRings: pipelined requests that fill the request
// ring, whose replies fill the reply ring, while the Client is still
// writing: the server, blocked writing a reply, must have given back the
// requests it took, or the two sides wait for each other.
func TestRingsRepliesFillBothRings(t *testing.T) {
	leakcheck.Check(t)
	reply := make([]byte, 2000)
	ts := startServer(t, HandlerFunc(func(_ context.Context, _ []byte, w *ReplyWriter) error {
		_, err := w.Write(reply)
		return err
	}), withRings)
	c := dialRings(t, ts.path) // 64 KiB rings
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	const n = 4096 + 16 // 16-byte records: a ring's worth and more
	for i := range n {
		if err := c.Queue([]byte("12345678")); err != nil {
			t.Fatalf("Queue %d: %v", i, err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got, err := c.Recv(); err != nil || len(got) != len(reply) {
			t.Fatalf("Recv %d: %d bytes, %v", i, len(got), err)
		}
	}
}

// TestRingsPostsBeforeCall: a request sent after one-way messages never
// returns a reply that vouches for messages the server did not take.
// Messages still in the Client's batch when the server went away go first
// on the new connection; messages in the old connection's ring that the
// server never took make the request fail (ErrNotProcessed) instead of
// going on a new connection; messages it took do not.
func TestRingsPostsBeforeCall(t *testing.T) {
	leakcheck.Check(t)
	blocked := make(chan struct{}, 1)
	h := func(l *postLog) Handler { return blockOn("block", blocked, l) }
	path := socketPath(t)
	a := startServerAt(t, path, h(&postLog{}), withRings)
	c := dialRings(t, path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	call := func(req string) error {
		got, err := c.Call([]byte(req))
		if err == nil && string(got) != "re:"+req {
			t.Fatalf("Call(%s) = %q", req, got)
		}
		return err
	}
	if err := call("hello"); err != nil {
		t.Fatal(err)
	}

	// In the batch, not yet in the ring, when the server goes.
	if err := c.Post([]byte("batched")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	l := &postLog{}
	b := startServerAt(t, path, h(l), withRings)
	if err := call("after batched"); err != nil {
		t.Fatalf("Call after a batch the old server never saw: %v", err)
	}
	l.mu.Lock()
	if len(l.reqs) != 2 || string(l.reqs[0]) != "batched" || !l.oneWay[0] {
		t.Errorf("the new server got %q (one-way %v), want the batch before the call", l.reqs, l.oneWay)
	}
	l.mu.Unlock()

	// In the ring, not taken: the server is stuck in the message before.
	postAll(t, c, "block", "untaken")
	<-blocked
	b.Close()
	l = &postLog{}
	d := startServerAt(t, path, h(l), withRings, WithIdleTimeout(50*time.Millisecond))
	lostThenServed(t, c, "re:")

	// In the ring and taken, then the connection closed for idleness.
	if err := c.Post([]byte("taken")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return l.len() == 2 })        // "next", "taken"
	waitFor(t, func() bool { return d.Stats().Open == 0 }) // closed for idleness
	if err := call("after taken"); err != nil {
		t.Fatalf("Call after messages the server took, its connection closed for idleness: %v", err)
	}
}

// TestRingsPostsLostFoundByFlush: when a Flush (not a request) finds that
// the connection ended with posted messages the server never took, the
// next request still fails with ErrNotProcessed instead of vouching for
// them on a new connection; the request after it goes out.
func TestRingsPostsLostFoundByFlush(t *testing.T) {
	leakcheck.Check(t)
	blocked := make(chan struct{}, 1)
	h := blockOn("block", blocked, HandlerFunc(echoRaw))
	path := socketPath(t)
	a := startServerAt(t, path, h, withRings)
	c := dialRings(t, path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	postAll(t, c, "block", "untaken")
	<-blocked
	a.Close()
	if err := c.Post([]byte("later")); err != nil { // into the Client's batch
		t.Fatal(err)
	}
	if err := c.Flush(); err == nil { // finds the connection gone
		t.Fatal("Flush on a closed server's rings succeeded")
	}
	startServerAt(t, path, h, withRings)
	lostThenServed(t, c, "")
}

// TestRingsPostTakenNotServedAtStop: a posted message that the server took
// from the ring (the record after a handler's, taken as the lease passes
// on) but never served, because a graceful stop came between the two, is
// not given back: the Client counts it as at risk, and the next request
// fails with ErrNotProcessed rather than vouch for it on a new connection.
func TestRingsPostTakenNotServedAtStop(t *testing.T) {
	leakcheck.Check(t)
	inA, releaseA := make(chan struct{}), make(chan struct{})
	l := &postLog{}
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "A" {
			close(inA)
			<-releaseA
		}
		return l.ServeIPC(ctx, req, w)
	})
	path := socketPath(t)
	a := startServerAt(t, path, h, withRings)
	c := dialRings(t, path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	postAll(t, c, "A", "B") // one batch: B is in the ring while A runs
	<-inA
	stopped := make(chan error, 1)
	go func() { stopped <- a.Shutdown(context.Background()) }()
	waitFor(t, func() bool { return a.stopping.Load() })
	close(releaseA) // A returns; B is taken with A's give-back, and the stop ends the connection
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	l.mu.Lock()
	if len(l.reqs) != 1 || string(l.reqs[0]) != "A" {
		t.Fatalf("the stopped server served %q, want only A", l.reqs)
	}
	l.mu.Unlock()
	startServerAt(t, path, &postLog{}, withRings)
	lostThenServed(t, c, "re:")
}

// TestRingsLargePostHeldUntilServed: a posted message of several records
// is gathered before its handler runs, and its last record is given back
// only once the handler returns: while it runs, the Client does not count
// the message as taken (a server that died then would not have handled
// it).
func TestRingsLargePostHeldUntilServed(t *testing.T) {
	leakcheck.Check(t)
	in, release := make(chan struct{}), make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if len(req) > 1000 {
			close(in)
			<-release
		}
		return echoRaw(ctx, req, w)
	})
	ts := startServer(t, h, withRings)
	c := dialRings(t, ts.path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	big := pattern(3*c.rout.MaxRecord()+100, 1)
	if err := c.Post(big); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	<-in
	if c.rout.Taken() {
		t.Error("a large message counted as taken while its handler runs")
	}
	close(release)
	if got, err := c.Call([]byte("after")); err != nil || string(got) != "after" {
		t.Fatalf("Call after the large message: %q, %v", got, err)
	}
	// The call's own record is given back just after its reply goes out.
	waitFor(t, func() bool { return c.rout.Taken() })
}

// TestRingsPostBatchOnNewConnection: a batch of posts that the server
// closed its connection under goes again on the new connection, however
// it is reached: by a Post that overflows the batch onto a server without
// rings (the overflowing message then goes as a request too), or by Recv.
func TestRingsPostBatchOnNewConnection(t *testing.T) {
	leakcheck.Check(t)
	for _, via := range []string{"Post", "Recv"} {
		path := socketPath(t)
		a := startServerAt(t, path, &postLog{}, withRings)
		c := dialRings(t, path)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Send([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Recv(); err != nil || string(got) != "re:hello" {
			t.Fatalf("%s: Recv = %q, %v", via, got, err)
		}
		msg := pattern(1000, 1)
		n := c.ringBatch()/ring.RecordSize(len(msg)) - 1 // the batch's last message still fits
		for range n {
			if err := c.Post(msg); err != nil {
				t.Fatal(err)
			}
		}
		a.Close()
		l := &postLog{}
		startServerAt(t, path, l) // no rings
		want := n
		switch via {
		case "Post":
			for range 2 { // the second overflows the batch
				if err := c.Post(msg); err != nil {
					t.Fatal(err)
				}
			}
			want += 2
		case "Recv":
			if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
				t.Fatalf("Recv with no request: %v", err)
			}
		}
		if got, err := c.Call([]byte("after")); err != nil || string(got) != "re:after" {
			t.Fatalf("%s: Call = %q, %v", via, got, err)
		}
		if got := l.len(); got != want+1 {
			t.Fatalf("%s: the new server got %d messages, want %d posts and the call", via, got, want)
		}
		c.Close()
	}
}

// TestRingsPostsOutliveIdleClose: posts laid out for rings whose server
// has gone, before any of them reached it, go at the next Flush to the
// server that took its place: as one-way messages laid out again for its
// smaller rings, or as requests to a server without rings; before a call
// made after them.
func TestRingsPostsOutliveIdleClose(t *testing.T) {
	leakcheck.Check(t)
	for _, next := range []string{"smaller rings", "no rings"} {
		path := socketPath(t)
		a, err := NewServer(path, &postLog{}, withRings)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- a.Serve(context.Background()) }()
		c := dialRings(t, path)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Call([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		big := pattern(3000, 1) // beyond a record of a 4 KiB ring
		for _, msg := range [][]byte{[]byte("one"), big, []byte("three")} {
			if err := c.Post(msg); err != nil {
				t.Fatal(err)
			}
		}
		a.Close()
		<-errc
		l := &postLog{}
		opts := []Option{WithRingLimits(64, 4096)}
		if next == "no rings" {
			opts = nil
		}
		startServerAt(t, path, l, opts...)
		if err := c.Flush(); err != nil {
			t.Fatalf("%s: Flush: %v", next, err)
		}
		if got, err := c.Call([]byte("after")); err != nil || string(got) != "re:after" {
			t.Fatalf("%s: Call: %q, %v", next, got, err)
		}
		l.mu.Lock()
		if len(l.reqs) != 4 || string(l.reqs[0]) != "one" || !bytes.Equal(l.reqs[1], big) || string(l.reqs[2]) != "three" ||
			string(l.reqs[3]) != "after" || l.oneWay[0] != (next == "smaller rings") {
			t.Errorf("%s: the new server got %d requests (%.8q...), one-way %v", next, len(l.reqs), l.reqs, l.oneWay)
		}
		l.mu.Unlock()
		c.Close()
	}
}

// TestRingsPostServerGone: a post into rings whose server closed the idle
// connection goes out on a new one; with the server gone, Flush and Post
// fail.
func TestRingsPostServerGone(t *testing.T) {
	leakcheck.Check(t)
	l := &postLog{}
	ts := startServer(t, l, withRings, WithIdleTimeout(50*time.Millisecond))
	c := dialRings(t, ts.path)
	if err := c.Post([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 }) // idle: closed
	if err := c.Post([]byte("second")); err != nil {
		t.Fatalf("Post after the idle connection closed: %v", err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return l.len() == 2 })
	if !c.Rings() {
		t.Fatal("the new connection has no rings")
	}
	if err := c.Post([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	ts.Close()
	if err := c.Flush(); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Flush with the server gone: %v, want ErrNotProcessed", err)
	}
	if err := c.Post([]byte("x")); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Post with the server gone: %v, want ErrNotProcessed", err)
	}
}

// BenchmarkRingsPost measures one-way 64 B messages over rings, flushed
// 64 at a time, with the server in this process.
func BenchmarkRingsPost(b *testing.B) {
	ts := startServer(b, HandlerFunc(func(context.Context, []byte, *ReplyWriter) error { return nil }), withRings)
	c := dialRings(b, ts.path)
	msg := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for i := 0; b.Loop(); i++ {
		if err := c.Post(msg); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			if err := c.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := c.Call(nil); err != nil { // every message handled
		b.Fatal(err)
	}
}

// TestPostsNeverMisattribute: posts mixed with pipelined requests while
// the server restarts at random, on rings and on a socket: every reply a
// Client returns is its own request's (the handler echoes posts too, so a
// post's reply taken for a request's would show), and every failure is
// typed.
func TestPostsNeverMisattribute(t *testing.T) {
	leakcheck.Check(t)
	for _, rings := range []bool{true, false} {
		path := socketPath(t)
		var opts []Option
		if rings {
			opts = append(opts, withRings)
		}
		s := serveAt(t, path, HandlerFunc(echoRaw), opts...)
		var copts []ClientOption
		if rings {
			copts = append(copts, WithRings(1<<16))
		}
		c, err := Dial(context.Background(), path, copts...)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		rng := rand.New(rand.NewPCG(7, 8))
		var sent []string // requests sent and not yet received
		verified, failed := 0, 0
		recv := func() {
			want := sent[0]
			sent = sent[1:]
			got, err := c.Recv()
			switch {
			case err == nil && string(got) != want:
				t.Fatalf("rings %v: Recv returned %q for %q", rings, got, want)
			case err == nil:
				verified++
			case errors.Is(err, ErrIncompleteReply), errors.Is(err, ErrNotProcessed):
				failed++
			default:
				t.Fatalf("rings %v: Recv for %q: untyped %v", rings, want, err)
			}
		}
		for i := range 3000 {
			switch k := rng.IntN(10); {
			case k < 4:
				msg := fmt.Appendf(nil, "post-%d", i)
				if err := c.Post(append(msg, pattern(rng.IntN(3)*20_000, i)...)); err != nil && !errors.Is(err, ErrNotProcessed) {
					t.Fatalf("rings %v: Post: untyped %v", rings, err)
				}
			case k < 7:
				req := fmt.Sprintf("req-%d", i)
				if err := c.Send([]byte(req)); err != nil {
					if !errors.Is(err, ErrNotProcessed) {
						t.Fatalf("rings %v: Send: untyped %v", rings, err)
					}
					failed++
					continue
				}
				sent = append(sent, req)
			case k < 9 && len(sent) > 0:
				recv()
			default:
				_ = c.Flush()
			}
			if i%500 == 250 { // a restart with requests in flight
				s.close(t)
				s = serveAt(t, path, HandlerFunc(echoRaw), opts...)
			}
		}
		for len(sent) > 0 {
			recv()
		}
		if got, err := c.Call([]byte("last")); err != nil || string(got) != "last" {
			t.Fatalf("rings %v: last Call = %q, %v", rings, got, err)
		}
		t.Logf("rings %v: %d replies verified, %d requests failed", rings, verified, failed)
		if verified < 100 || failed == 0 {
			t.Errorf("rings %v: %d replies verified, %d requests failed; want at least 100, and failures from the restarts", rings, verified, failed)
		}
		c.Close()
		s.close(t)
	}
}

// TestRingsClientDeathNoticed: a client whose process dies closes its
// socket and never marks its rings closed. The server notices at once
// whether it waits for a request, runs a handler when the client dies, or
// waits with a stray doorbell byte unread.
func TestRingsClientDeathNoticed(t *testing.T) {
	leakcheck.Check(t)
	for _, when := range []string{"waiting", "in a handler", "with a byte pending"} {
		ts := startServer(t, HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
			if string(req) == "slow" {
				time.Sleep(100 * time.Millisecond)
			}
			_, err := w.Write(req)
			return err
		}), withRings)
		uc, w, r := rawRingPeer(t, ts.path)
		send := func(msg string) {
			b, err := w.Reserve(len(msg))
			if err != nil {
				t.Fatal(err)
			}
			w.Commit(copy(b, msg), false)
			if _, err := uc.Write([]byte{1}); err != nil { // the doorbell, whether or not the server waits on it
				t.Fatal(err)
			}
		}
		r.SetDeadline(time.Now().Add(5 * time.Second))
		send("x")
		if got, err := r.ReadMessage(nil, 16); err != nil || string(got) != "x" {
			t.Fatalf("%s: reply %q, %v", when, got, err)
		}
		switch when {
		case "waiting":
			time.Sleep(50 * time.Millisecond)
		case "in a handler":
			send("slow")
			time.Sleep(30 * time.Millisecond)
		case "with a byte pending":
			send("slow")
			time.Sleep(30 * time.Millisecond)
			if _, err := uc.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // the server waits again, the byte unread or read
		}
		start := time.Now()
		uc.Close() // the process dies: its rings stay as they were
		waitWithin(t, time.Second, func() bool { return ts.Stats().Open == 0 })
		t.Logf("%s: the server noticed after %v", when, time.Since(start))
		w.Close()
		r.Close()
		ts.Close()
	}
}

// TestRingsServerKilled: a Client on rings whose server process is
// killed gets an error at once, whether it waits for the reply or
// comes to Recv after the death.
func TestRingsServerKilled(t *testing.T) {
	for _, when := range []string{"during Recv", "before Recv"} {
		path := socketPath(t)
		ch := startChild(t, path)
		c := dialRings(t, path, WithClientSpin(0))
		if !c.Rings() {
			t.Fatal("no rings")
		}
		if _, err := c.Call([]byte("warm")); err != nil {
			t.Fatal(err)
		}
		if err := c.Send([]byte("sleep 10s")); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		if when == "during Recv" {
			go func() { _, err := c.Recv(); done <- err }()
		}
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		_ = ch.cmd.Process.Kill()
		if when == "before Recv" {
			time.Sleep(50 * time.Millisecond)
			go func() { _, err := c.Recv(); done <- err }()
		}
		select {
		case err := <-done:
			if !errors.Is(err, ErrIncompleteReply) {
				t.Fatalf("%s: %v, want ErrIncompleteReply", when, err)
			}
			t.Logf("%s: Recv failed %v after the kill", when, time.Since(start))
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%s: the Client noticed after %v", when, d)
			}
		case <-time.After(10 * time.Second):
			c.Close()
			<-done
			t.Fatalf("%s: Recv still waits 10s after the server died", when)
		}
	}
}

// panicOn is next, except that a request of word makes the handler panic:
// the server kills the connection.
func panicOn(word string, next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == word {
			panic("engine test: " + word)
		}
		return next.ServeIPC(ctx, req, w)
	})
}

// TestRingsBatchedPostLost: a message posted into the Client's batch
// behind a request whose connection then dies never reaches a server;
// whether a Recv or a Flush finds that out, the next request fails with
// ErrNotProcessed rather than vouch for it on a new connection. Before,
// the batch was dropped with the connection and the next request
// succeeded.
func TestRingsBatchedPostLost(t *testing.T) {
	for _, finder := range []string{"Recv", "Flush"} {
		t.Run(finder, func(t *testing.T) {
			leakcheck.Check(t)
			l := &postLog{}
			ts := startServer(t, panicOn("die", l), withRings)
			c := dialRings(t, ts.path)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := c.Send([]byte("die")); err != nil {
				t.Fatal(err)
			}
			if err := c.Post([]byte("lost")); err != nil { // into the batch only
				t.Fatal(err)
			}
			waitFor(t, func() bool { return ts.Stats().Open == 0 })
			if finder == "Flush" {
				if err := c.Flush(); err == nil {
					t.Fatal("Flush on a killed connection succeeded")
				}
			}
			if _, err := c.Recv(); !errors.Is(err, ErrIncompleteReply) {
				t.Fatalf("Recv for the request whose handler panicked: %v", err)
			}
			lostThenServed(t, c, "re:")
			if got := l.requests(); !slices.Equal(got, []string{"next"}) {
				t.Fatalf("the server saw %q", got)
			}
		})
	}
}

// dialAt starts a server of h at path, on rings if rings, with opts, and
// dials it as a Client (with rings if rings) with a 10 s deadline. It
// returns the server, the Client and the options with the rings' added.
func dialAt(t *testing.T, path string, h Handler, rings bool, opts ...Option) (*testServer, *Client, []Option) {
	t.Helper()
	if rings {
		opts = append(opts, withRings)
	}
	ts := startServerAt(t, path, h, opts...)
	c := dialClient(t, path)
	if rings {
		c = dialRings(t, path)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return ts, c, opts
}

// blockedPosts starts an echo server (on rings if rings) whose handler
// blocks on "block" until the server stops, dials it, posts msgs, the
// first of which is "block", and returns once its handler runs: the server,
// the Client, the socket path and the server's options.
func blockedPosts(t *testing.T, rings bool, msgs ...string) (*testServer, *Client, string, []Option) {
	t.Helper()
	blocked := make(chan struct{}, 1)
	path := socketPath(t)
	a, c, opts := dialAt(t, path, blockOn("block", blocked, HandlerFunc(echoRaw)), rings)
	postAll(t, c, msgs...)
	<-blocked
	return a, c, path, opts
}

// TestRingsPostsBeforeFailedRequest: messages posted into the ring and not
// taken (a handler before them blocks), then a request whose connection
// ends before its reply: the posts stay at risk, and the next request on a
// new server fails with ErrNotProcessed. Before, sending the request
// counted as confirming them, on rings only.
func TestRingsPostsBeforeFailedRequest(t *testing.T) {
	for _, rings := range []bool{true, false} {
		t.Run(fmt.Sprint("rings=", rings), func(t *testing.T) {
			leakcheck.Check(t)
			a, c, path, opts := blockedPosts(t, rings, "block", "untaken")
			if err := c.Send([]byte("req")); err != nil {
				t.Fatal(err)
			}
			a.Close()
			if _, err := c.Recv(); err == nil {
				t.Fatal("Recv from a closed server succeeded")
			}
			startServerAt(t, path, HandlerFunc(echoRaw), opts...)
			lostThenServed(t, c, "")
		})
	}
}

// TestRingsKillSeenBesideStuckHandler: a connection killed at its
// handler's deadline, while the handler (which ignores its context) holds
// the reply ring's last record, is seen by the client at once, not when
// the handler returns.
func TestRingsKillSeenBesideStuckHandler(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if _, err := w.Write([]byte("part")); err != nil {
			return err
		}
		<-release
		return nil
	})
	ts := startServer(t, h, withRings, WithHandlerTimeout(50*time.Millisecond))
	defer close(release) // before the server's stop, which waits for the handler
	c := dialRings(t, ts.path)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if got, err := c.Call([]byte("x")); err == nil {
		t.Fatalf("Call to a killed connection: %q", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the client saw the kill after %v", d)
	}
}

// TestReserveFlushCommit: a Flush between Reserve and Commit keeps the
// reserved buffer, on rings as on a socket: Commit sends what the handler
// wrote there, not what an earlier reply left in a scratch buffer. A
// Commit without a Reserve fails.
func TestReserveFlushCommit(t *testing.T) {
	for _, rings := range []bool{false, true} {
		t.Run(fmt.Sprint("rings=", rings), func(t *testing.T) {
			leakcheck.Check(t)
			again := make(chan error, 1)
			h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
				if string(req) == "big" { // more than a ring record: scratch
					p, err := w.Reserve(2 << 20)
					if err != nil {
						return err
					}
					for i := range p {
						p[i] = 'B'
					}
					return w.Commit(len(p))
				}
				p, err := w.Reserve(5)
				if err != nil {
					return err
				}
				copy(p, "hello")
				if err := w.Flush(); err != nil {
					return err
				}
				if err := w.Commit(5); err != nil {
					return err
				}
				again <- w.Commit(5)
				return nil
			})
			_, c, _ := dialAt(t, socketPath(t), h, rings)
			if got, err := c.Call([]byte("big")); err != nil || len(got) != 2<<20 {
				t.Fatalf("big: %d bytes, %v", len(got), err)
			}
			if got, err := c.Call([]byte("small")); err != nil || string(got) != "hello" {
				t.Fatalf("reply %.20q, %v; want hello", got, err)
			}
			if err := <-again; err == nil {
				t.Fatal("a second Commit without a Reserve succeeded")
			}
		})
	}
}

// TestRingsBatchedPostLostBehindLargePost: a message waiting in the
// Client's batch when a large Post finds the server gone goes with the
// connection; the next request on a new server fails with ErrNotProcessed
// rather than vouch for it.
func TestRingsBatchedPostLostBehindLargePost(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	a, c, _ := dialAt(t, path, HandlerFunc(echoRaw), true)
	if _, err := c.Call([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := c.Post([]byte("small")); err != nil { // into the batch only
		t.Fatal(err)
	}
	a.Close()
	if err := c.Post(make([]byte, 2*clientBatchBytes)); err == nil {
		t.Fatal("a large Post to a closed server succeeded")
	}
	startServerAt(t, path, HandlerFunc(echoRaw), withRings)
	lostThenServed(t, c, "")
}

// TestRingsPostsAfterIdleClose: posts made while the server is away or
// was restarted: a batch that a Flush, a Recv or a Send could not take to
// any server fails the next request on the new one (ErrNotProcessed);
// small posts then a large one after a restart all reach the new server,
// the large one going after the batch, which goes again on a new
// connection. Before, a failed reconnect dropped the batch silently, and a
// large Post dropped the batch before it.
func TestRingsPostsAfterIdleClose(t *testing.T) {
	for _, finder := range []string{"Flush", "Recv", "Send"} {
		t.Run("unreachable/"+finder, func(t *testing.T) {
			leakcheck.Check(t)
			path := socketPath(t)
			a, c, _ := dialAt(t, path, HandlerFunc(echoRaw), true)
			if _, err := c.Call([]byte("first")); err != nil {
				t.Fatal(err)
			}
			a.Close() // no server for now
			if err := c.Post([]byte("small")); err != nil {
				t.Fatal(err)
			}
			var err error
			switch finder {
			case "Flush":
				err = c.Flush()
			case "Recv":
				if _, err = c.Recv(); errors.Is(err, ErrNoRequest) {
					err = nil // Recv sends the batch on its way and has nothing to read
				}
			case "Send":
				err = c.Send([]byte("req"))
			}
			if finder != "Recv" && err == nil {
				t.Fatalf("%s with no server succeeded", finder)
			}
			startServerAt(t, path, HandlerFunc(echoRaw), withRings)
			if finder == "Send" {
				// A request's own failure reports the posts lost before
				// it (withLostPosts); the next request goes out.
				if !strings.Contains(err.Error(), "posted before it may be lost") {
					t.Fatalf("Send's error does not report the lost post: %v", err)
				}
				if got, err := c.Call([]byte("next")); err != nil || string(got) != "next" {
					t.Fatalf("the next Call: %q, %v", got, err)
				}
				return
			}
			lostThenServed(t, c, "")
		})
	}
	t.Run("restarted", func(t *testing.T) {
		leakcheck.Check(t)
		l := &postLog{}
		path := socketPath(t)
		a, c, _ := dialAt(t, path, l, true)
		if _, err := c.Call([]byte("first")); err != nil {
			t.Fatal(err)
		}
		a.Close()
		startServerAt(t, path, l, withRings)
		if err := c.Post([]byte("small")); err != nil {
			t.Fatal(err)
		}
		large := bytes.Repeat([]byte("L"), 2*clientBatchBytes)
		if err := c.Post(large); err != nil {
			t.Fatalf("a large Post after a restart: %v", err)
		}
		if got, err := c.Call([]byte("after")); err != nil || string(got) != "re:after" {
			t.Fatalf("Call after: %q, %v", got, err)
		}
		if got := l.requests(); len(got) != 4 || got[1] != "small" || got[2] != string(large) || got[3] != "after" {
			t.Fatalf("the servers saw %d requests: %.20q", len(got), got)
		}
	})
}

// TestRingsHandledPostThenTimeout: a post the server handled (its record
// given back) is not at risk when a later Call on the connection times
// out: the next Call goes out on a new connection. The request that timed
// out is still running there, which made every post before it count as at
// risk.
func TestRingsHandledPostThenTimeout(t *testing.T) {
	leakcheck.Check(t)
	l := &postLog{}
	blocked := make(chan struct{}, 1)
	ts := startServer(t, blockOn("slow", blocked, l), withRings)
	c := dialRings(t, ts.path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	postAll(t, c, "m")
	waitFor(t, func() bool { return l.len() == 1 })
	if err := c.Send([]byte("slow")); err != nil {
		t.Fatal(err)
	}
	<-blocked
	waitFor(t, func() bool { return c.rout.TakenTo(c.rpostEnd) }) // the post's record is back; the request's is not
	_ = c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv for the blocked request: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := c.Call([]byte("next")); err != nil || string(got) != "re:next" {
		t.Fatalf("Call after a timeout, the post long handled: %q, %v", got, err)
	}
}

// TestPostHandlerCancelled: a posted message whose handler the server's
// stop cancelled (it returned its context's error) may not have been
// handled: on rings as on a socket the next request fails with
// ErrNotProcessed rather than vouch for it on a new server. Before, the
// ring record was given back once the handler returned, which the client
// took for handled.
func TestPostHandlerCancelled(t *testing.T) {
	for _, rings := range []bool{true, false} {
		t.Run(fmt.Sprint("rings=", rings), func(t *testing.T) {
			leakcheck.Check(t)
			a, c, path, opts := blockedPosts(t, rings, "block")
			a.Close()
			startServerAt(t, path, HandlerFunc(echoRaw), opts...)
			lostThenServed(t, c, "")
		})
	}
}

// TestPostHandledThenIdleClose: a message posted as a request (on a
// socket, or on rings without one-way messages) and handled, its reply
// unread, then the server closes the idle connection: nothing was lost,
// and the next Call goes out on a new connection, reading the reply off
// the old one first. Before, the posted message counted as in flight and
// the Call failed with ErrNotProcessed.
func TestPostHandledThenIdleClose(t *testing.T) {
	for _, mode := range []struct{ rings, queue bool }{{false, false}, {false, true}, {true, false}} {
		rings := mode.rings
		t.Run(fmt.Sprintf("rings=%v,queue=%v", rings, mode.queue), func(t *testing.T) {
			leakcheck.Check(t)
			l := &postLog{}
			ts, c, _ := dialAt(t, socketPath(t), l, rings, WithIdleTimeout(50*time.Millisecond))
			if _, err := c.Call([]byte("first")); err != nil {
				t.Fatal(err)
			}
			if rings {
				c.roneway = false // as from a server that grants rings without one-way messages
			}
			postAll(t, c, "m")
			waitFor(t, func() bool { return l.len() == 2 })
			waitFor(t, func() bool { return ts.Stats().Open == 0 }) // closed for idleness
			if mode.queue {                                         // staged, then written by Flush (flush)
				if err := c.Queue([]byte("after")); err != nil {
					t.Fatal(err)
				}
				if err := c.Flush(); err != nil {
					t.Fatalf("Flush after a handled post and an idle close: %v", err)
				}
			} else if err := c.Send([]byte("after")); err != nil {
				t.Fatalf("Send after a handled post and an idle close: %v", err)
			}
			if got, err := c.Recv(); err != nil || string(got) != "re:after" {
				t.Fatalf("the reply: %q, %v", got, err)
			}
			if got := l.requests(); !slices.Equal(got, []string{"first", "m", "after"}) {
				t.Fatalf("the server saw %q", got)
			}
		})
	}
}
