package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/uds"
)

// closedWithin reads from c until the server closes it and returns how
// long that took.
func closedWithin(t *testing.T, c net.Conn, start time.Time) time.Duration {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1024)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("server did not close the connection within 10s")
		}
		return time.Since(start)
	}
}

// TestSlowClients: silent, partial and trickling clients hold no worker and
// are closed at their deadlines (a first-byte deadline, then one for the
// whole request, which trickling cannot extend), while a legitimate client
// is answered. git's daemon, by contrast, gives each such client a worker
// for as long as it stays.
func TestSlowClients(t *testing.T) {
	leakcheck.Check(t)
	const firstByte, whole = 300 * time.Millisecond, 600 * time.Millisecond
	ts := startServer(t, HandlerFunc(gitDaemon), WithWorkers(1),
		WithFirstByteTimeout(firstByte), WithRequestTimeout(whole))

	start := time.Now()
	var silent, partial []net.Conn
	for range 10 {
		silent = append(silent, dialRaw(t, ts.path))
		c := dialRaw(t, ts.path)
		if _, err := c.Write([]byte("0008pi")); err != nil {
			t.Fatal(err)
		}
		partial = append(partial, c)
	}
	// A trickler sends one byte every 50 ms of a request that never ends:
	// the whole-request deadline must not be extended by it.
	trickler := dialRaw(t, ts.path)
	stopTrickle := make(chan struct{})
	var twg sync.WaitGroup
	twg.Add(1)
	go func() {
		defer twg.Done()
		msg := []byte("03e8" + string(bytes.Repeat([]byte("x"), 996)))
		for i := 0; i < len(msg); i++ {
			if _, err := trickler.Write(msg[i : i+1]); err != nil {
				return
			}
			select {
			case <-stopTrickle:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stopTrickle); twg.Wait() }()

	// The single worker stays free for legitimate clients meanwhile.
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, err := Send(ctx, ts.path, []byte("ping"))
		cancel()
		if err != nil || string(got) != "pong" {
			t.Fatalf("legitimate client: %q, %v", got, err)
		}
	}
	check := func(kind string, c net.Conn, limit time.Duration) {
		d := closedWithin(t, c, start)
		t.Logf("%s client closed after %v (deadline %v)", kind, d.Round(time.Millisecond), limit)
		if d < limit*9/10 || d > limit+2*time.Second {
			t.Errorf("%s client closed after %v, deadline %v", kind, d, limit)
		}
	}
	for _, c := range silent {
		check("silent", c, firstByte)
	}
	for _, c := range partial {
		check("partial", c, whole)
	}
	check("trickling", trickler, whole)
	st := ts.Stats()
	if st.FirstByteTimeout != 10 || st.RequestTimeout != 11 {
		t.Errorf("timeouts: first byte %d (want 10), request %d (want 11)", st.FirstByteTimeout, st.RequestTimeout)
	}
}

// TestLateLoopKeepsPromptClient: the first-byte deadline is the client's,
// not the server's: a connection whose request arrived in time but waits
// unread behind a busy loop is not closed for silence.
func TestLateLoopKeepsPromptClient(t *testing.T) {
	leakcheck.Check(t)
	started := make(chan struct{}, 1)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "block" {
			started <- struct{}{}
			time.Sleep(2 * time.Second) // holds the only loop, past the first-byte deadline
		}
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, WithEventLoops(1), WithInlineHandlers(true),
		WithFirstByteTimeout(600*time.Millisecond)) // room for the block to start first on a loaded machine
	blocker, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	_ = blocker.SetDeadline(time.Now().Add(10 * time.Second))
	prompt := dialRaw(t, ts.path)
	waitFor(t, func() bool { return ts.Stats().Open == 2 }) // on the loop, under its first-byte deadline
	if err := blocker.Send([]byte("block")); err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := prompt.Write(frame.AppendMessage(nil, []byte("ping"))); err != nil {
		t.Fatal(err)
	}
	got, kind := readAll(t, prompt)
	if want := frame.AppendMessage(nil, []byte("ping")); !bytes.Equal(got, want) || kind != kindEOF {
		t.Errorf("prompt client got %q (%s), want %q and the end", got, kind, want)
	}
	if got, err := blocker.Recv(); err != nil || string(got) != "block" {
		t.Errorf("blocker: %q, %v", got, err)
	}
	if st := ts.Stats(); st.FirstByteTimeout != 0 {
		t.Errorf("FirstByteTimeout = %d for a client that sent its request in time", st.FirstByteTimeout)
	}
}

// TestClientLeavesMidReply: a client that disconnects during a large reply
// affects only itself: the handler's write fails or its context is
// cancelled, and the server goes on serving others.
func TestClientLeavesMidReply(t *testing.T) {
	leakcheck.Check(t)
	var returned atomic.Int32
	var sawErr atomic.Bool
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) != "flood" {
			return gitDaemon(ctx, req, w)
		}
		defer returned.Add(1)
		chunk := make([]byte, 256<<10)
		for range 256 { // 64 MiB
			if _, err := w.Write(chunk); err != nil {
				sawErr.Store(true)
				return err
			}
			if ctx.Err() != nil {
				sawErr.Store(true)
				return ctx.Err()
			}
		}
		return nil
	})
	ts := startServer(t, h)
	for range 3 {
		c := dialRaw(t, ts.path)
		if _, err := c.Write([]byte("0009flood0000")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 100<<10)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	waitFor(t, func() bool { return returned.Load() == 3 })
	if !sawErr.Load() {
		t.Fatal("handlers never saw the departure")
	}
	if got, err := Send(context.Background(), ts.path, []byte("ping")); err != nil || string(got) != "pong" {
		t.Fatalf("after departures: %q, %v", got, err)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
}

// TestNonReadingClient: a client that never reads does not grow the
// server's memory past the high-water mark (the handler's writes are held
// back, or fail with ErrBackpressure, instead of being buffered without
// limit); it is closed at the write deadline.
func TestNonReadingClient(t *testing.T) {
	const mark = 1 << 20
	for _, mode := range []string{"pool", "inline"} {
		t.Run(mode, func(t *testing.T) {
			leakcheck.Check(t)
			var written atomic.Int64
			var werr atomic.Value
			done := make(chan struct{}, 1)
			h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
				defer func() { done <- struct{}{} }()
				chunk := make([]byte, 64<<10)
				for range 4096 { // 256 MiB offered
					if _, err := w.Write(chunk); err != nil {
						werr.Store(err)
						return err
					}
					written.Add(int64(len(chunk)))
				}
				return nil
			})
			ts := startServer(t, h, WithInlineHandlers(mode == "inline"),
				WithOutboundHighWater(mark), WithWriteTimeout(500*time.Millisecond))
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			c := dialRaw(t, ts.path)
			if _, err := c.Write([]byte("0008fill0000")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("handler not stopped by back-pressure or the write deadline")
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			growth := int64(after.HeapInuse) - int64(before.HeapInuse)
			t.Logf("handler wrote %d KiB before %v; heap grew %d KiB", written.Load()>>10, werr.Load(), growth>>10)
			// The kernel holds about 200 KiB; gnet at most twice the mark; the
			// writer one flush (256 KiB) plus a chunk.
			if w := written.Load(); w > 4*mark {
				t.Errorf("handler wrote %d bytes into a non-reading connection", w)
			}
			if growth > 16<<20 {
				t.Errorf("heap grew %d bytes", growth)
			}
			if mode == "inline" {
				if err, _ := werr.Load().(error); !errors.Is(err, ErrBackpressure) {
					t.Errorf("inline handler got %v, want ErrBackpressure", err)
				}
			}
			waitFor(t, func() bool { return ts.Stats().Open == 0 })
		})
	}
}

// TestHandlerPanic: a panic is recovered and counted; the client gets an
// incomplete reply; the server goes on.
func TestHandlerPanic(t *testing.T) {
	for _, inline := range []bool{false, true} {
		leakcheck.Check(t)
		h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
			if string(req) == "boom" {
				_, _ = w.WriteString("partial")
				panic("boom")
			}
			return gitDaemon(ctx, req, w)
		})
		ts := startServer(t, h, WithInlineHandlers(inline))
		if got, err := Send(context.Background(), ts.path, []byte("boom")); !errors.Is(err, ErrIncompleteReply) || got != nil {
			t.Fatalf("inline=%v: panic gave %q, %v", inline, got, err)
		}
		if got, err := Send(context.Background(), ts.path, []byte("ping")); err != nil || string(got) != "pong" {
			t.Fatalf("after a panic: %q, %v", got, err)
		}
		if n := ts.Stats().Panics; n != 1 {
			t.Fatalf("Panics = %d", n)
		}
	}
}

// TestHandlerTimeout: a handler past its time has its context cancelled and
// its connection closed.
func TestHandlerTimeout(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		<-ctx.Done()
		return context.Cause(ctx)
	})
	ts := startServer(t, h, WithHandlerTimeout(200*time.Millisecond))
	start := time.Now()
	_, err := Send(context.Background(), ts.path, []byte("hang"))
	if !errors.Is(err, ErrIncompleteReply) {
		t.Fatalf("err = %v", err)
	}
	t.Logf("closed after %v", time.Since(start))
	if st := ts.Stats(); st.HandlerTimeout != 1 {
		t.Fatalf("HandlerTimeout = %d", st.HandlerTimeout)
	}
}

// TestQuit: a handler returning ErrQuit stops the server after its reply,
// as git's SIMPLE_IPC_QUIT does; the socket is removed.
func TestQuit(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon))
	got, err := Send(context.Background(), ts.path, []byte("quit"))
	if err != nil || len(got) != 0 {
		t.Fatalf("quit: %q, %v", got, err)
	}
	select {
	case err := <-ts.errc:
		ts.errc <- err // for the cleanup's check
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after quit")
	}
	if _, err := os.Lstat(ts.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestStolenSocket: when the path is taken over, Serve stops within a
// second with ErrSocketStolen and leaves the thief's socket alone (it never
// unlinks a path that no longer names its own socket).
func TestStolenSocket(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	s, err := NewServer(path, HandlerFunc(gitDaemon))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background()) }()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	thief, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	thief.SetUnlinkOnClose(false)
	defer thief.Close()
	start := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrSocketStolen) {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("theft not noticed")
	}
	t.Logf("theft noticed after %v", time.Since(start))
	if time.Since(start) > 3*time.Second {
		t.Errorf("theft noticed after %v", time.Since(start))
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("thief's socket removed: %v", err)
	}
}

// TestGracefulShutdown: requests in flight finish; new connections fail,
// since the server stops accepting at once.
func TestGracefulShutdown(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send([]byte("slowping")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Stats().Requests == 1 })
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	got, err := c.Recv()
	if err != nil || string(got) != "pong" {
		t.Fatalf("in-flight request: %q, %v", got, err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := Send(context.Background(), ts.path, []byte("ping")); err == nil {
		t.Fatal("a new request succeeded after Shutdown")
	}
}

// TestConnectionCaps: at a cap held by connections that completed a
// request, a new connection is accepted and closed at once, and counted.
func TestConnectionCaps(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMaxConns(3, 2))
	var held []*Client
	for range 2 {
		c, err := Dial(context.Background(), ts.path) // the handshake is a whole request
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 2 })
	over := dialRaw(t, ts.path) // same uid: over the per-uid cap of 2
	if d := closedWithin(t, over, time.Now()); d > 2*time.Second {
		t.Fatalf("over-cap connection closed after %v", d)
	}
	if st := ts.Stats(); st.OverCap != 1 || st.Evicted != 0 {
		t.Fatalf("OverCap = %d, Evicted = %d", st.OverCap, st.Evicted)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	if got, err := Send(context.Background(), ts.path, []byte("ping")); err != nil || string(got) != "pong" {
		t.Fatalf("after the cap cleared: %q, %v", got, err)
	}
}

// TestCapEvictsUnproven: at a cap, a new connection makes room by closing
// the oldest connection that has not completed a request, of the same uid
// at the uid's cap, so a client with a whole request is never refused
// while silent or partial ones hold the slots.
func TestCapEvictsUnproven(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMaxConns(4, 3))
	persistent, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer persistent.Close()
	silent := dialRaw(t, ts.path)
	waitFor(t, func() bool { return ts.Stats().Open == 2 })
	partial := dialRaw(t, ts.path)
	if _, err := partial.Write([]byte("0008pi")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 3 })
	// Two clients with whole requests (the handshake) take their slots.
	for i := range 2 {
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatalf("client %d at the cap: %v", i, err)
		}
		defer c.Close()
		if got, err := c.Call([]byte("ping")); err != nil || string(got) != "pong" {
			t.Fatalf("client %d at the cap: %q, %v", i, got, err)
		}
	}
	if d := closedWithin(t, silent, time.Now()); d > 2*time.Second {
		t.Fatalf("the oldest unproven connection was closed after %v", d)
	}
	if d := closedWithin(t, partial, time.Now()); d > 2*time.Second {
		t.Fatalf("the partial connection was closed after %v", d)
	}
	if got, err := persistent.Call([]byte("ping")); err != nil || string(got) != "pong" {
		t.Fatalf("the persistent client was disturbed: %q, %v", got, err)
	}
	// Every slot of the uid is held by a proven client now: refused at
	// once, before or after its request is written.
	if _, err := Send(context.Background(), ts.path, []byte("ping")); !errors.Is(err, ErrIncompleteReply) && !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("a client over a cap of proven ones: %v", err)
	}
	if st := ts.Stats(); st.Evicted != 2 || st.OverCap != 1 {
		t.Fatalf("Evicted = %d, OverCap = %d, want 2 and 1", st.Evicted, st.OverCap)
	}
}

// TestPressureTightensDeadlines: near a cap, a silent connection is closed
// at the tighter first-byte deadline, not the configured one.
func TestPressureTightensDeadlines(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMaxConns(100, 8), WithFirstByteTimeout(time.Minute))
	silent := []net.Conn{dialRaw(t, ts.path), dialRaw(t, ts.path)}
	waitFor(t, func() bool { return ts.Stats().Open == 2 })
	// Five clients with whole requests bring the uid to three quarters of
	// its cap, and keep it there while the silent ones go.
	var proven []*Client
	for range 5 {
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		proven = append(proven, c)
	}
	start := time.Now()
	for _, c := range silent {
		if d := closedWithin(t, c, start); d > 5*time.Second {
			t.Fatalf("closed after %v under pressure", d)
		}
	}
	if st := ts.Stats(); st.FirstByteTimeout != 2 {
		t.Fatalf("FirstByteTimeout = %d", st.FirstByteTimeout)
	}
	for _, c := range proven {
		if got, err := c.Call([]byte("ping")); err != nil || string(got) != "pong" {
			t.Fatalf("a client with whole requests: %q, %v", got, err)
		}
		c.Close()
	}
	// Without pressure the configured deadline holds.
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	calm := dialRaw(t, ts.path)
	_ = calm.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := calm.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a lone silent connection was closed early: %v", err)
	}
}

// TestRequestCap: a request over the cap is refused without a reply and
// without buffering it (git's daemon has no cap and grows by the size of
// whatever it is sent).
func TestRequestCap(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMaxRequestSize(1000))
	_, err := Send(context.Background(), ts.path, bytes.Repeat([]byte("a"), 2000))
	if !errors.Is(err, ErrIncompleteReply) {
		t.Fatalf("err = %v", err)
	}
	if st := ts.Stats(); st.ProtocolErrors != 1 || st.Requests != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPeerFromContext: handlers see the kernel's credentials for the peer.
func TestPeerFromContext(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		p, ok := PeerFromContext(ctx)
		if !ok {
			return errors.New("no peer")
		}
		_, err := w.WriteString(string(rune('0' + p.ID%10)))
		if int(p.Cred.UID) != os.Getuid() || int(p.Cred.PID) != os.Getpid() {
			_, err = w.WriteString(" wrong identity")
		}
		return err
	})
	ts := startServer(t, h)
	if got, err := Send(context.Background(), ts.path, nil); err != nil || string(got) != "1" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestMessageSocketsRefuseDescriptors: SCM_RIGHTS sent to a server
// connection fail at the sender (SO_PASSRIGHTS, Linux 6.16+), because gnet
// reads with read(2) and the kernel would drop them silently.
func TestMessageSocketsRefuseDescriptors(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon))
	c := dialRaw(t, ts.path)
	waitFor(t, func() bool { return ts.Stats().Open == 1 })
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, _, err = c.WriteMsgUnix([]byte{0}, unixRights(int(f.Fd())), nil)
	if err == nil {
		t.Skip("kernel accepted SCM_RIGHTS: SO_PASSRIGHTS needs Linux 6.16+")
	}
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("sendmsg with SCM_RIGHTS: %v, want EPERM", err)
	}
}

// TestAcceptAtDescriptorLimit: a server under a low RLIMIT_NOFILE keeps
// serving through EMFILE, backing off instead of stopping, and recovers
// once the pressure ends. The server runs in its own process.
func TestAcceptAtDescriptorLimit(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	ch := startChild(t, path, "PKTIPC_NOFILE=48")
	var held []*net.UnixConn
	for range 200 {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			break // the backlog is full: also pressure
		}
		held = append(held, c)
	}
	// Held connections are either served (until the server's table is full)
	// or shed with a prompt EOF by the spare-descriptor trick.
	time.Sleep(300 * time.Millisecond)
	for _, c := range held {
		c.Close()
	}
	var got []byte
	var err error
	for range 100 { // recovery within one back-off step (1 s at most)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got, err = Send(ctx, path, []byte("ping"))
		cancel()
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || string(got) != "pong" {
		t.Fatalf("server did not recover: %q, %v", got, err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("socket file gone: %v", err)
	}
	st := ch.stop(t)
	t.Logf("held %d connections; stats %+v", len(held), st)
	if st.AcceptExhausted == 0 {
		t.Errorf("the server never hit its descriptor limit: %+v", st)
	}
}

// TestServerKilledMidReply: the client gets a typed error, not a partial
// reply, and a new server reclaims the stale socket at once (a connect
// probe that is refused marks the socket file as stale).
func TestServerKilledMidReply(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	ch := startChild(t, path)
	type result struct {
		b   []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := Send(ctx, path, []byte("halfreply"))
		res <- result{b, err}
	}()
	time.Sleep(300 * time.Millisecond)
	if err := ch.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if !errors.Is(r.err, ErrIncompleteReply) || r.b != nil {
		t.Fatalf("client got %d bytes, %v; want ErrIncompleteReply", len(r.b), r.err)
	}
	_ = ch.wait()
	s, err := NewServer(path, HandlerFunc(gitDaemon))
	if err != nil {
		t.Fatalf("restart on the stale socket: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBurstBeyondWorkerQueue: far more clients than git's queue of
// workers x 100 arrive at once at one slow worker; each waits its turn and
// is answered, none is closed unanswered.
func TestBurstBeyondWorkerQueue(t *testing.T) {
	leakcheck.Check(t)
	const clients = 250
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		time.Sleep(time.Millisecond)
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, h, WithWorkers(1), WithMaxConns(clients, clients))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			req := fmt.Appendf(nil, "client %d", i)
			got, err := Send(ctx, ts.path, req)
			if err == nil && !bytes.Equal(got, req) {
				err = fmt.Errorf("reply %q to %q", got, req)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := ts.Stats(); st.Overloaded != 0 || st.Requests != clients {
		t.Fatalf("stats %+v: want %d requests, none overloaded", st, clients)
	}
}

// TestWorkerSurvivesDepartures: with a single worker, clients that leave
// while it hands a reply to the loop must not disturb the replies it writes
// afterwards for others. (gnet runs a hand-off's callback even after the
// connection closed; an acknowledgement meant for a departed client once
// reached the worker's next hand-off and failed an innocent reply.)
func TestWorkerSurvivesDepartures(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		n := 8
		if string(req) == "flood" {
			n = 1 << 20
		}
		chunk := make([]byte, 4096)
		for range n {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
	ts := startServer(t, h, WithWorkers(1))
	for round := range 30 {
		c := dialRaw(t, ts.path)
		if _, err := c.Write([]byte("0009flood0000")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		for i := range 3 {
			got, err := Send(context.Background(), ts.path, []byte("eight"))
			if err != nil || len(got) != 8*4096 {
				t.Fatalf("round %d request %d after a departure: %d bytes, %v", round, i, len(got), err)
			}
		}
	}
}

// TestLobby: near a cap, silent newcomers wait in the lobby and are closed
// there, never costing an event loop, while clients with whole requests
// pass through it at once; attackers that reconnect at once do not starve
// them.
func TestLobby(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMaxConns(100, 8))
	for range 6 { // three quarters of the uid's cap, proven
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	before := ts.Stats()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// Twelve attackers fit in the lobby (twice the uid's cap of 8): a
	// larger crowd churns it, each newcomer closing the oldest waiter, and
	// a client whose request comes after sixteen newer arrivals would be
	// closed too (ErrNotProcessed; safe to send again).
	for range 12 {
		wg.Go(func() {
			buf := make([]byte, 16)
			for ctx.Err() == nil {
				c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.path, Net: "unix"})
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				stop := context.AfterFunc(ctx, func() { c.Close() })
				_, _ = c.Read(buf) // until the server closes it
				stop()
				c.Close()
			}
		})
	}
	for i := range 50 {
		got, err := Send(context.Background(), ts.path, []byte("ping"), WithDialOptions(uds.WaitIfBusy()))
		if err != nil || string(got) != "pong" {
			t.Fatalf("client %d beside the attackers: %q, %v", i, got, err)
		}
	}
	time.Sleep(2 * lobbyWait)
	// Counted before the attackers leave: a connection that is gone by
	// the time the accept loop looks at it counts as accepted (git's
	// probe), and they leave in bulk.
	st := ts.Stats()
	cancel()
	wg.Wait()
	if st.Lobbied == 0 || st.LobbyClosed == 0 {
		t.Fatalf("nobody waited in the lobby: %+v", st)
	}
	// Only the clients with requests reached a loop.
	if n := st.Accepted - before.Accepted; n != 50 {
		t.Fatalf("%d connections enrolled for 50 clients: %+v", n, st)
	}
}

// Close ends every connection at once, one whose pooled handler ignores
// its context and runs on included: its client sees the end while the
// handler still runs, and Close returns once the handler does.
func TestCloseEndsConnectionOfRunningHandler(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	running := make(chan struct{})
	s, err := NewServer(socketPath(t), HandlerFunc(func(context.Context, []byte, *ReplyWriter) error {
		close(running)
		<-release // deaf to its context
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	c, err := Dial(context.Background(), s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // the hang, if Close leaves it open
	if err := c.Send([]byte("wait")); err != nil {
		t.Fatal(err)
	}
	<-running
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	if _, err := c.Recv(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Recv while the handler runs on after Close: %v, want the connection's end", err)
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	<-served
}

// A server on a listener the caller made (socket activation hands one
// over, uds.Inherited) serves it like its own, and closes it when it
// stops; options about making a listener are refused.
func TestServerOnCallersListener(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	ln, err := uds.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewServerListener(ln, HandlerFunc(echo), WithListenOptions(uds.WithMode(0o666))); err == nil {
		t.Fatal("WithListenOptions accepted for a listener already made")
	}
	s, err := NewServerListener(ln, HandlerFunc(echo))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	if got, err := Send(context.Background(), path, []byte("ping")); err != nil || string(got) != "re:ping" {
		t.Fatalf("Send: %q, %v", got, err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if st := uds.State(path); st == uds.Listening {
		t.Fatal("the listener still listens after Shutdown")
	}
}
