//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package engine

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/ring"
)

// Tests of the server's watch serving ring requests itself
// (ringConn.serveWatched) for inline handlers.

// watchProcs gives the test's process room for the server's watch and the
// Clients' one at once (watching allows GOMAXPROCS-1), so that the
// server's waits in a crowd go through its watch.
func watchProcs(t *testing.T) {
	t.Helper()
	needProcs(t, 2)
	prev := runtime.GOMAXPROCS(4)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// onWatch reports whether w's handler runs on the server's watch.
func onWatch(w *ReplyWriter) bool { return w.ring != nil && w.ring.onWatch }

// withClients dials n Clients of path on rings, runs f for each on a
// goroutine of its own, and waits for them all.
func withClients(t *testing.T, path string, n int, f func(i int, c *Client), opts ...ClientOption) {
	t.Helper()
	cs := make([]*Client, n)
	for i := range cs {
		cs[i] = dialRings(t, path, opts...)
	}
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i, c)
		}()
	}
	wg.Wait()
}

// crowdCalls has clients Clients call at once, calls each, with the
// requests req makes, and checks every reply against want.
func crowdCalls(t *testing.T, path string, clients, calls int, req func(client, call int) []byte, want func(req []byte) []byte, opts ...ClientOption) {
	t.Helper()
	withClients(t, path, clients, func(i int, c *Client) {
		for k := range calls {
			q := req(i, k)
			got, err := c.Call(q)
			if err != nil || !bytes.Equal(got, want(q)) {
				t.Errorf("client %d call %d: %d bytes, %v", i, k, len(got), err)
				return
			}
		}
	}, opts...)
}

func same(req []byte) []byte { return req }

// countingEcho is echoRaw, counting in watched the requests it served on
// the watch.
func countingEcho(watched *atomic.Int64) Handler {
	return HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if onWatch(w) {
			watched.Add(1)
		}
		return echoRaw(ctx, req, w)
	})
}

// redial is dialRings for a goroutine other than the test's: a failure is
// reported and gives nil.
func redial(t *testing.T, path string) *Client {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path, WithRings(1<<16))
	if err != nil {
		t.Errorf("dial: %v", err)
		return nil
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRingsWatchServesInline: with inline handlers, requests that reach
// the server's watch are served there, and every reply is its request's,
// requests of several records (the connection's goroutine gathers them)
// among them.
func TestRingsWatchServesInline(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	bothServeModes(t, testRingsWatchServesInline)
}

func testRingsWatchServesInline(t *testing.T, serveAll bool) {
	var watched, other, largeOnWatch atomic.Int64
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		switch {
		case onWatch(w) && len(req) > ringWatchServeMax:
			largeOnWatch.Add(1)
		case onWatch(w):
			watched.Add(1)
		default:
			other.Add(1)
		}
		return echoRaw(ctx, req, w)
	})
	ts := startServer(t, h, withRings, WithInlineHandlers(true))
	ts.Server.rings.watch.serveAll.Store(serveAll)
	crowdCalls(t, ts.path, 12, 300, func(i, k int) []byte {
		n := 1 + (i*300+k)%700
		switch {
		case i < 6 && k%50 == 7:
			n = 100 << 10 // one record of the 1 MiB ring, too large for the watch
		case k%50 == 7:
			n = 600 << 10 // more than a record of the 1 MiB ring
		}
		return pattern(n, i*300+k)
	}, same, WithRings(1<<20))
	if watched.Load() == 0 {
		t.Errorf("no request was served on the watch (%d elsewhere)", other.Load())
	}
	if largeOnWatch.Load() > 0 {
		t.Errorf("%d requests larger than ringWatchServeMax were served on the watch", largeOnWatch.Load())
	}
	t.Logf("%d requests served on the watch, %d on connections' goroutines", watched.Load(), other.Load())
}

// TestRingsWatchSpreads: with more than two processors, requests that
// come faster than the watch serves them are served on their connections'
// goroutines too, where they run beside the watch's, rather than all on
// the watch one after the other; with two (serveAll), the watch serves
// them all. The watch's handler takes a while, so that the other
// clients' requests are ready by its next round.
func TestRingsWatchSpreads(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	bothServeModes(t, func(t *testing.T, serveAll bool) {
		const clients, calls = 8, 40
		var watched, other atomic.Int64
		h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
			if onWatch(w) {
				for end := time.Now().Add(200 * time.Microsecond); time.Now().Before(end); {
				}
				watched.Add(1)
			} else {
				other.Add(1)
			}
			return echoRaw(ctx, req, w)
		})
		ts := startServer(t, h, withRings, WithInlineHandlers(true))
		ts.Server.rings.watch.serveAll.Store(serveAll)
		crowdCalls(t, ts.path, clients, calls, func(i, k int) []byte {
			return pattern(1+(i*37+k)%500, i+k)
		}, same)
		spread := ts.Server.rings.watch.spread.Load()
		t.Logf("%d requests served on the watch, %d on connections' goroutines, %d rings handed back to spread",
			watched.Load(), other.Load(), spread)
		if watched.Load() == 0 {
			t.Error("no request was served on the watch")
		}
		// A client's close can make its ring ready too: more than one a
		// client is requests.
		if !serveAll && spread <= clients {
			t.Errorf("%d rings handed back to spread: the watch kept the requests", spread)
		}
	})
}

// bothServeModes runs f as two subtests: the server's watch asking one
// serve per round and handing the other rings it finds ready back (as
// with more than two processors), and asking every serve (serveAll, as
// with two). The test sets the watch's serveAll as f says, before any
// client dials.
func bothServeModes(t *testing.T, f func(t *testing.T, serveAll bool)) {
	for _, all := range []bool{false, true} {
		name := "spread"
		if all {
			name = "serveAll"
		}
		t.Run(name, func(t *testing.T) { f(t, all) })
	}
}

// TestRingsWatchNotForPooled: without inline handlers, or with
// WithInlineFilter (which would read the request where the client can
// change it before its handler runs), the watch hands the ring back and
// the handler runs on the connection's goroutine.
func TestRingsWatchNotForPooled(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	for _, tc := range []struct {
		name string
		opt  Option
	}{
		{"pooled", WithInlineHandlers(false)},
		{"filtered", WithInlineFilter(func(req []byte) bool { return len(req) > 0 && req[0] == 'i' })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wrong atomic.Int64
			h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
				if onWatch(w) {
					wrong.Add(1)
				}
				return echoRaw(ctx, req, w)
			})
			ts := startServer(t, h, withRings, tc.opt)
			crowdCalls(t, ts.path, 8, 300, func(i, k int) []byte {
				q := pattern(1+k%300, i+k)
				q[0] = "ip"[k%2]
				return q
			}, same)
			if wrong.Load() > 0 {
				t.Errorf("%d requests ran on the watch", wrong.Load())
			}
			if ts.Server.rings.watch.handed.Load() == 0 {
				t.Error("no request came through the server's watch: the test measured nothing")
			}
		})
	}
}

// TestRingsWatchSpills: a reply larger than the room its ring has, from a
// handler on the watch, which must not wait for the client, is spilled
// and put in the ring as room comes, or by the connection's goroutine:
// whole and in order, whether written with Write or built with Reserve
// and Commit, with requests queued behind it, and the budget gets every
// spill back.
func TestRingsWatchSpills(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	bothServeModes(t, testRingsWatchSpills)
}

func testRingsWatchSpills(t *testing.T, serveAll bool) {
	var spilled atomic.Int64
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		// The reply: req three times, the middle one built in place.
		spills := false
		if _, err := w.Write(req); err != nil {
			return err
		}
		spills = spills || w.ring.spilling
		p, err := w.Reserve(len(req))
		if err != nil {
			return err
		}
		copy(p, req)
		if err := w.Commit(len(req)); err != nil {
			return err
		}
		spills = spills || w.ring.spilling
		if _, err := w.Write(req); err != nil {
			return err
		}
		if spills || w.ring.spilling {
			spilled.Add(1)
		}
		return nil
	})
	ts := startServer(t, h, withRings, WithInlineHandlers(true))
	ts.Server.rings.watch.serveAll.Store(serveAll)
	const clients, rounds, depth = 10, 60, 3
	withClients(t, ts.path, clients, func(i int, c *Client) {
		reqs := make([][]byte, depth)
		for r := range rounds {
			// Sent together, read afterwards: replies wait in the
			// ring (and spill) while the next requests queue.
			for d := range reqs {
				n := 1 + (i*rounds+r+d)%300
				if (r+d)%4 == 1 {
					n = 30 << 10 // three of them fill the 64 KiB ring and more
				}
				reqs[d] = pattern(n, i*rounds+r+d)
				if err := c.Send(reqs[d]); err != nil {
					t.Errorf("client %d: Send: %v", i, err)
					return
				}
			}
			for _, q := range reqs {
				got, err := c.Recv()
				if err != nil || !bytes.Equal(got, bytes.Repeat(q, 3)) {
					t.Errorf("client %d round %d: %d bytes for %d, %v", i, r, len(got), 3*len(q), err)
					return
				}
			}
		}
	})
	if spilled.Load() == 0 {
		t.Error("no reply spilled: the test did not reach the spill")
	}
	waitWithin(t, 5*time.Second, func() bool { return ts.Server.budget.used.Load() == 0 })
}

// TestRingsWatchSpillRefused: a spill beyond the memory budget, or beyond
// the outbound high-water mark, fails the handler's Write with
// ErrBackpressure and ends its connection, whose Client gets an error
// rather than a reply cut short; other connections go on, and the budget
// gets every spill back.
func TestRingsWatchSpillRefused(t *testing.T) {
	watchProcs(t)
	for _, tc := range []struct {
		name string
		opt  Option
		big  int
	}{
		{"budget", WithMemoryBudget(1 << 20), 4 << 20},
		{"high-water", WithOutboundHighWater(256 << 10), 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			bigReply := pattern(tc.big, 1)
			var onWatchBig, refused atomic.Int64
			h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
				if len(req) == 0 || req[0] != 'B' {
					return echoRaw(ctx, req, w)
				}
				if onWatch(w) {
					onWatchBig.Add(1)
				}
				_, err := w.Write(bigReply)
				if errors.Is(err, ErrBackpressure) {
					refused.Add(1)
				}
				return err
			})
			ts := startServer(t, h, withRings, WithInlineHandlers(true), tc.opt)
			var failed atomic.Int64
			withClients(t, ts.path, 8, func(i int, c *Client) {
				for k := range 300 {
					q := pattern(1+k%200, i+k)
					q[0] = 'e'
					big := i < 2 && k%30 == 29
					if big {
						q[0] = 'B'
					}
					if err := c.Send(q); err != nil {
						t.Errorf("client %d: Send: %v", i, err)
						return
					}
					if big {
						// Not reading for a while: the reply fills the
						// ring, and on the watch, the spill.
						time.Sleep(20 * time.Millisecond)
					}
					got, err := c.Recv()
					switch {
					case big && err == nil && !bytes.Equal(got, bigReply):
						t.Errorf("client %d: a cut reply of %d bytes for a whole one", i, len(got))
						return
					case big && err != nil:
						failed.Add(1)
						if c = redial(t, ts.path); c == nil {
							return
						}
					case big: // whole
					case err != nil || !bytes.Equal(got, q):
						t.Errorf("client %d call %d: %d bytes, %v", i, k, len(got), err)
						return
					}
				}
			})
			if failed.Load() != refused.Load() {
				t.Errorf("%d large replies on the watch, %d refused, %d calls failed", onWatchBig.Load(), refused.Load(), failed.Load())
			}
			if refused.Load() == 0 {
				t.Skipf("no large reply was refused (%d ran on the watch)", onWatchBig.Load())
			}
			waitWithin(t, 5*time.Second, func() bool { return ts.Server.budget.used.Load() == 0 })
		})
	}
}

// TestRingsWatchHandlerPanic: a handler that panics on the watch ends its
// connection alone; the watch goes on serving the others.
func TestRingsWatchHandlerPanic(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	var panics atomic.Int64
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if len(req) > 0 && req[0] == 'X' && onWatch(w) {
			panics.Add(1)
			panic("on the watch")
		}
		return echoRaw(ctx, req, w)
	})
	ts := startServer(t, h, withRings, WithInlineHandlers(true))
	withClients(t, ts.path, 8, func(i int, c *Client) {
		for k := range 300 {
			q := pattern(1+k%100, i+k)
			q[0] = 'e'
			if i < 4 && k%15 == 14 {
				q[0] = 'X'
			}
			got, err := c.Call(q)
			switch {
			case q[0] == 'X' && err == nil && !bytes.Equal(got, q):
				t.Errorf("a reply of %d bytes to a request whose handler panicked", len(got))
				return
			case q[0] == 'X' && err != nil:
				if c = redial(t, ts.path); c == nil {
					return
				}
			case err != nil || !bytes.Equal(got, q):
				t.Errorf("client %d call %d: %d bytes, %v", i, k, len(got), err)
				return
			}
		}
	})
	if panics.Load() == 0 {
		t.Skip("no panicking request ran on the watch")
	}
}

// TestRingsWatchServesPosts: one-way messages served on the watch are
// handled in order with the calls between them, and the server counts
// every request once they are answered.
func TestRingsWatchServesPosts(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	const clients, rounds, posts = 8, 100, 5
	var handled [clients]atomic.Int64 // posts handled, per client
	var watched atomic.Int64
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if onWatch(w) {
			watched.Add(1)
		}
		i := int(req[0])
		if w.OneWay() {
			handled[i].Add(1)
			return nil
		}
		_, err := w.Write([]byte(strconv.FormatInt(handled[i].Load(), 10)))
		return err
	})
	ts := startServer(t, h, withRings, WithInlineHandlers(true))
	before := ts.Stats().Requests
	withClients(t, ts.path, clients, func(i int, c *Client) {
		msg := []byte{byte(i), 'p'}
		for r := range rounds {
			for range posts {
				if err := c.Post(msg); err != nil {
					t.Errorf("client %d: Post: %v", i, err)
					return
				}
			}
			got, err := c.Call(msg)
			if want := strconv.Itoa((r + 1) * posts); err != nil || string(got) != want {
				t.Errorf("client %d round %d: %q, %v; want %s posts handled", i, r, got, err, want)
				return
			}
		}
	})
	if got, want := ts.Stats().Requests-before, uint64(clients*rounds*(posts+1)); got != want {
		t.Errorf("Stats().Requests grew by %d, want %d", got, want)
	}
	if watched.Load() == 0 {
		t.Error("no request was served on the watch")
	}
}

// TestRingsWatchQuit: a handler on the watch that returns ErrQuit stops
// the server, which ends every ring connection, the busy ones included.
func TestRingsWatchQuit(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	var quitOnWatch atomic.Bool
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "quit" {
			quitOnWatch.Store(onWatch(w))
			return ErrQuit
		}
		return echoRaw(ctx, req, w)
	})
	ts := startServer(t, h, withRings, WithInlineHandlers(true))
	var cs []*Client
	for range 8 {
		cs = append(cs, dialRings(t, ts.path))
	}
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				q := pattern(1+k%100, i+k)
				if i == 0 && k == 200 {
					q = []byte("quit")
				}
				got, err := c.Call(q)
				if err != nil {
					return // the server stopped
				}
				if !bytes.Equal(got, q) && string(q) != "quit" {
					t.Errorf("client %d call %d: %d bytes", i, k, len(got))
					return
				}
			}
		}()
	}
	// Within the graceful stop's limit (DefaultShutdownTimeout), after
	// which Close would end a stop that hangs.
	select {
	case err := <-ts.errc:
		ts.errc <- err // for the cleanup's check
	case <-time.After(DefaultShutdownTimeout - time.Second):
		t.Fatal("Serve did not return after quit")
	}
	wg.Wait()
	t.Logf("quit served on the watch: %v", quitOnWatch.Load())
}

// TestRingsWatchIdleToSocket: connections the watch served and then
// handed back idle wait on their sockets, counted as waits for a request
// (the crowd and spin decisions read the count), and serve again when
// their clients call.
func TestRingsWatchIdleToSocket(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	var watched atomic.Int64
	ts := startServer(t, countingEcho(&watched), withRings, WithInlineHandlers(true))
	const clients = 8
	var cs []*Client
	for range clients {
		cs = append(cs, dialRings(t, ts.path))
	}
	calls := func() {
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range 200 {
					q := pattern(1+k%100, i+k)
					if got, err := c.Call(q); err != nil || !bytes.Equal(got, q) {
						t.Errorf("client %d call %d: %d bytes, %v", i, k, len(got), err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	calls()
	if watched.Load() == 0 {
		t.Fatal("no request was served on the watch")
	}
	g := &ts.Server.rings.gauge
	waitWithin(t, 5*time.Second, func() bool { return g.waits() == clients && g.spins() == 0 })
	time.Sleep(50 * time.Millisecond) // past the watch's stay
	if n := g.waits(); n != clients {
		t.Errorf("%d waits for a request counted, with %d connections idle", n, clients)
	}
	calls()
}

// BenchmarkRingsCrowd: 16 Clients calling at once with 4 KiB requests,
// against a server whose handlers run on the connections' goroutines
// (pooled) or inline, where the server's watch runs them itself.
func BenchmarkRingsCrowd(b *testing.B) {
	for _, inline := range []bool{false, true} {
		name := "pooled"
		if inline {
			name = "inline"
		}
		b.Run(name, func(b *testing.B) {
			prev := runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), 4))
			defer runtime.GOMAXPROCS(prev)
			ts := startServer(b, HandlerFunc(echoRaw), withRings, WithInlineHandlers(inline))
			req := pattern(4<<10, 1)
			b.ReportAllocs()
			b.SetBytes(int64(len(req)))
			b.SetParallelism(16 / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				c, err := Dial(context.Background(), ts.path, WithRings(1<<16))
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				for pb.Next() {
					if _, err := c.Call(req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestSpillCompacts drives a reply on the watch by hand: once the ring is
// full the reply spills; room the client makes is filled from the spill's
// front as the handler writes on (unspill), the spill's buffer is
// compacted rather than grown once its front has gone, and the rest goes
// with sendSpill on the connection's goroutine. The client reads the
// reply whole and in order, and the budget gets the buffer back.
func TestSpillCompacts(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw))
	rc, in := handRing(t, ts)
	w := &rc.reply
	var want []byte
	write := func(i int) {
		t.Helper()
		p := pattern(rc.chunk, i) // one record each
		want = append(want, p...)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	// The ring takes three records; the next four spill, the last of
	// them open.
	rc.onWatch = true
	for i := range 7 {
		write(i)
	}
	if !rc.spilling || rc.spillAt != 0 {
		t.Fatalf("spilling %v at %d after seven records", rc.spilling, rc.spillAt)
	}
	held := cap(rc.spill)
	got, more, err := in.Next() // room for one record
	if err != nil || !more {
		t.Fatalf("first record: more %v, %v", more, err)
	}
	got = append([]byte(nil), got...)
	in.Release()
	write(7) // moves one record out of the spill, then compacts it
	if rc.spillAt != 0 || cap(rc.spill) != held || len(rc.spill) != 3*rc.chunk {
		t.Fatalf("spill at %d of %d bytes in %d, want 0 of %d in %d", rc.spillAt, len(rc.spill), cap(rc.spill), 3*rc.chunk, held)
	}
	if err := w.finishRing(); err != nil || !rc.spilling {
		t.Fatalf("finish on the watch: spilling %v, %v", rc.spilling, err)
	}
	rc.onWatch = false
	done := make(chan error, 1)
	go func() {
		rest, err := in.ReadMessage(nil, 1<<20)
		got = append(got, rest...)
		done <- err
	}()
	if err := w.sendSpill(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the client read %d bytes of %d (%v)", len(got), len(want), err)
	}
	if n := ts.Server.budget.used.Load(); n != 0 {
		t.Errorf("the memory budget counts %d bytes after the reply", n)
	}
}

// handRing makes a connection of ts's with a reply ring of 64 KiB, for a
// test that drives its ReplyWriter by hand (begun for a reply), and the
// ring's reader, the client's side. Its socket's peer reads nothing.
func handRing(t *testing.T, ts *testServer) (*ringConn, *ring.Reader) {
	t.Helper()
	out, in := newRingPair(t, 64<<10)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, peer := os.NewFile(uintptr(fds[0]), "bell"), os.NewFile(uintptr(fds[1]), "peer")
	defer ours.Close()
	t.Cleanup(func() { peer.Close() })
	sock, err := net.FileConn(ours) // a duplicate
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	rc := &ringConn{s: ts.Server, uc: sock.(*net.UnixConn), out: out, chunk: out.MaxRecord() / 2}
	rc.reply.ring = rc
	rc.reply.beginRing(false)
	return rc, in
}

// TestRingsHandlerDeadlineWhileWaitingForRoom: a client that takes a
// record of a long reply now and then, each within the write deadline,
// keeps the handler no longer than the handler deadline: a wait for room
// runs under whichever of the two ends first.
func TestRingsHandlerDeadlineWhileWaitingForRoom(t *testing.T) {
	leakcheck.Check(t)
	const piece, pieces = 16 << 10, 256 // 4 MiB through a 64 KiB ring
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		p := make([]byte, piece)
		for range pieces {
			if _, err := w.Write(p); err != nil {
				return err
			}
		}
		return nil
	})
	// No spin, and a second connection waiting for a request, so that
	// this one's waits for room do not sleep in the ring either (that is
	// for a process's only wait): every wait is on the socket, under the
	// deadline it sets.
	ts := startServer(t, h, withRings, WithRingSpin(0), WithHandlerTimeout(300*time.Millisecond), WithWriteTimeout(5*time.Second))
	dialRings(t, ts.path)
	c := dialRings(t, ts.path)
	waitFor(t, func() bool { return ts.Stats().Open == 2 })
	if err := c.Send([]byte("long")); err != nil {
		t.Fatal(err)
	}
	// Take a record every 40 ms, from the reply ring itself: Recv would
	// take them as fast as they come.
	start, records := time.Now(), 0
	var err error
	for time.Since(start) < 10*time.Second {
		if !c.rin.Ready() {
			time.Sleep(time.Millisecond)
			continue
		}
		if _, _, err = c.rin.Next(); err != nil {
			break
		}
		c.rin.Release()
		records++
		time.Sleep(40 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("%d records in %v, then %v", records, took, err)
	if err == nil {
		t.Fatalf("the reply ring still gave records after %v", took)
	}
	if got := ts.Stats().HandlerTimeout; got != 1 {
		t.Errorf("HandlerTimeout = %d, want 1 (WriteTimeout %d)", got, ts.Stats().WriteTimeout)
	}
	// 300 ms at a record per 40 ms is 8 records; 25 leaves a loaded
	// machine's reaper most of a second to be late.
	if records >= 25 {
		t.Errorf("the client took %d records, %v of the reply, past the handler's deadline", records, took)
	}
}

// TestSpillSendOneDeadline: a spilled reply that the connection's
// goroutine sends waits for room, record after record, under one write
// deadline from when it began, not one per record: a client that takes a
// record now and then keeps the spill no longer than the write deadline.
func TestSpillSendOneDeadline(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw))
	rc, in := handRing(t, ts)
	w := &rc.reply
	rc.onWatch = true
	for i := range 9 { // three records fill the ring: six spill
		if _, err := w.Write(pattern(rc.chunk, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.finishRing(); err != nil || !rc.spilling {
		t.Fatalf("finish on the watch: spilling %v, %v", rc.spilling, err)
	}
	rc.onWatch = false
	// As the watch leaves a connection whose handler spilled: under the
	// handler's deadline, from a start long past.
	rc.start = ts.Server.now() - int64(time.Hour)
	rc.setWhy(whyHandler, rc.start)
	// Every deadline the reaper could see during the send: from its
	// first change of the handler's until the send ends (idle: the last
	// records are in).
	initial := rc.dl.load()
	starts := map[seen]bool{}
	var stop atomic.Bool
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for moved := false; !stop.Load(); {
			d := rc.dl.load()
			moved = moved || d != initial
			if moved && d.why != whyIdle {
				starts[d] = true
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- w.sendSpill() }()
	for sent := false; !sent; {
		time.Sleep(30 * time.Millisecond) // the goroutine waits for room meanwhile
		if _, more, err := in.Next(); err != nil {
			t.Fatal(err)
		} else {
			sent = !more
		}
		in.Release()
	}
	err := <-done
	stop.Store(true)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	if len(starts) != 1 {
		t.Errorf("the spill went out under %d deadlines (%v), want one write deadline", len(starts), starts)
	}
	for d := range starts {
		if d.why != whyWrite {
			t.Errorf("the spill went out under the %v deadline, want the write deadline", d.why)
		}
	}
	if d := rc.dl.load(); d.why != whyIdle {
		t.Errorf("after the spill the connection's deadline is %v, want the idle one back", d.why)
	}
}
