package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// scriptedServer answers every connection by reading one request (up to
// its terminator) and writing reply, then closing unless keepOpen.
type scriptedServer struct {
	path string
	ln   *net.UnixListener
	wg   sync.WaitGroup
}

func startScripted(t *testing.T, reply string, keepOpen bool) *scriptedServer {
	t.Helper()
	path := socketPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{path: path, ln: ln}
	done := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				r := frame.NewReader(c, frame.SimpleIPC, 1<<20)
				if _, err := r.ReadMessage(); err != nil {
					return
				}
				_, _ = c.Write([]byte(reply))
				if keepOpen {
					select {
					case <-done:
					case <-time.After(10 * time.Second):
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// TestClientAgainstScriptedServers replays what git's client was observed
// to make of scripted servers' replies (a reply ends at its first
// zero-length packet; a truncated or malformed one is a failure that keeps
// nothing), for Send and for Client.
func TestClientAgainstScriptedServers(t *testing.T) {
	cases := []struct {
		reply    string
		keepOpen bool
		want     string
		err      error
	}{
		{reply: "0008pong0000", want: "pong"},
		{reply: "0000", want: ""},
		{reply: "0008pong", err: ErrIncompleteReply},
		{reply: "0008pong0001", want: "pong"},
		{reply: "0008pong0002", want: "pong"},
		{reply: "0008pong00040008more0000", want: "pong"},
		{reply: "0005p0005o0005n0005g0000", want: "pong"},
		{reply: "000Apong!!0000", want: "pong!!"},
		{reply: "zzzz", err: frame.ErrBadHeader},
		{reply: "0003", err: frame.ErrBadLength},
		{reply: "fff1", err: frame.ErrTooLong},
		{reply: "", err: ErrIncompleteReply},
		{reply: "0008pong0000", keepOpen: true, want: "pong"},
		{reply: "", keepOpen: true, err: os.ErrDeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q/open=%v", tc.reply, tc.keepOpen), func(t *testing.T) {
			leakcheck.Check(t)
			s := startScripted(t, tc.reply, tc.keepOpen)
			check := func(got []byte, err error) {
				t.Helper()
				if tc.err != nil {
					if !errors.Is(err, tc.err) && !(tc.err == os.ErrDeadlineExceeded && errors.Is(err, context.DeadlineExceeded)) {
						t.Fatalf("err = %v, want %v", err, tc.err)
					}
					if got != nil {
						t.Fatalf("partial reply %q returned with the error", got)
					}
					return
				}
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			check(Send(ctx, s.path, []byte("ping")))

			c, err := Dial(context.Background(), s.path, WithGitStyle())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
			check(c.Call([]byte("ping")))
		})
	}
}

// TestClientHandshakeWithGitServer: against a server that answers the
// handshake like git's daemon and closes, the Client falls back to one
// connection per request and still pipelines, in order.
func TestClientHandshakeWithGitServer(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo), WithPersistent(false))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Persistent() {
		t.Fatal("a server refusing persistence was taken as persistent")
	}
	for i := range 5 {
		if err := c.Send([]byte(fmt.Sprint("req", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		got, err := c.Recv()
		if want := fmt.Sprint("re:req", i); err != nil || string(got) != want {
			t.Fatalf("reply %d = %q, %v; want %q", i, got, err, want)
		}
	}
	if got := ts.Stats().Accepted; got != 6 {
		t.Fatalf("accepted %d connections, want 6 (handshake + one per request)", got)
	}
}

// echo answers "re:" and the request, which large requests send uncopied.
func echo(_ context.Context, req []byte, w *ReplyWriter) error {
	if _, err := w.WriteString("re:"); err != nil {
		return err
	}
	_, err := w.WriteUncopied(req)
	return err
}

// TestPersistentPipelining sends many requests of many sizes back to back
// on one connection and checks every reply, in order, in both modes.
func TestPersistentPipelining(t *testing.T) {
	for _, mode := range []string{"pool", "inline"} {
		t.Run(mode, func(t *testing.T) {
			leakcheck.Check(t)
			ts := startServer(t, HandlerFunc(echo), WithInlineHandlers(mode == "inline"))
			c, err := Dial(context.Background(), ts.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !c.Persistent() {
				t.Fatal("our server declined the handshake")
			}
			sizes := []int{0, 1, 64, 4096, 65515, 65516, 65517, 100_000, 1 << 20, 3<<20 + 7}
			for round := range 2 {
				for i, n := range sizes {
					if err := c.Send(bytes.Repeat([]byte{byte('a' + i)}, n)); err != nil {
						t.Fatal(err)
					}
				}
				for i, n := range sizes {
					got, err := c.Recv()
					if err != nil {
						t.Fatalf("round %d reply %d: %v", round, i, err)
					}
					want := append([]byte("re:"), bytes.Repeat([]byte{byte('a' + i)}, n)...)
					if !bytes.Equal(got, want) {
						t.Fatalf("round %d reply %d: %d bytes, want %d", round, i, len(got), len(want))
					}
				}
			}
			if st := ts.Stats(); st.Accepted != 1 || st.Requests != uint64(2*len(sizes)) {
				t.Fatalf("stats %+v: want 1 connection and %d requests", st, 2*len(sizes))
			}
		})
	}
}

// TestClientReconnectsAfterIdleClose: a persistent connection closed by the
// server's idle timeout is re-opened on the next request.
func TestClientReconnectsAfterIdleClose(t *testing.T) {
	leakcheck.Check(t)
	// Long enough that the first call is not itself a reconnect when the
	// test is starved between Dial and Call on a loaded machine.
	ts := startServer(t, HandlerFunc(echo), WithIdleTimeout(500*time.Millisecond))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call([]byte("one")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { st := ts.Stats(); return st.IdleTimeout == 1 && st.Open == 0 })
	got, err := c.Call([]byte("two"))
	if err != nil || string(got) != "re:two" {
		t.Fatalf("after idle close: %q, %v", got, err)
	}
	if n := ts.Stats().Accepted; n != 2 {
		t.Fatalf("accepted %d, want 2", n)
	}
}

// TestSetDeadlineDuringReconnect: SetDeadline from another goroutine while
// TestBoundByLateCut: a handshake's context that ends as the handshake
// finishes leaves no past deadline on the connection for the next call.
func TestBoundByLateCut(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		done := c.boundBy(ctx)
		cancel()
		done()
		if got, err := c.Call([]byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("round %d: Call after a late cut = %q, %v", i, got, err)
		}
	}
}

// the owner reconnects (the race detector checks the sharing).
func TestSetDeadlineDuringReconnect(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo), WithIdleTimeout(150*time.Millisecond))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			time.Sleep(100 * time.Microsecond)
		}
	})
	var seen uint64 // idle timeouts so far: a starved test may see more than one per call
	for i := range 3 {
		// Idle past the server's timeout: the next call reconnects.
		waitFor(t, func() bool { st := ts.Stats(); return st.IdleTimeout > seen && st.Open == 0 })
		seen = ts.Stats().IdleTimeout
		if got, err := c.Call([]byte("x")); err != nil || string(got) != "re:x" {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
	}
	if n := ts.Stats().Accepted; n < 3 {
		t.Fatalf("accepted %d connections, want a reconnect per call", n)
	}
}

// TestConcurrentClients runs clients in parallel goroutines, each with its
// own Client and with Send.
func TestConcurrentClients(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo), WithWorkers(3))
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(context.Background(), ts.path)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			for i := range 200 {
				req := fmt.Sprintf("g%d-%d", g, i)
				got, err := c.Call([]byte(req))
				if err != nil || string(got) != "re:"+req {
					errc <- fmt.Errorf("%s: %q %v", req, got, err)
					return
				}
				if i%50 == 0 {
					got, err := Send(context.Background(), ts.path, []byte(req))
					if err != nil || string(got) != "re:"+req {
						errc <- fmt.Errorf("send %s: %q %v", req, got, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// TestStreamedReplies checks git's reply_cb shape: each Write is its own
// packets, never merged (the test daemon's "chunk").
func TestStreamedReplies(t *testing.T) {
	leakcheck.Check(t)
	line := strings.Repeat("x", 80) + "\n"
	h := func(_ context.Context, req []byte, w *ReplyWriter) error {
		for range 10_000 {
			if _, err := w.WriteString(line); err != nil {
				return err
			}
		}
		return nil
	}
	for _, inline := range []bool{false, true} {
		ts := startServer(t, HandlerFunc(h), WithInlineHandlers(inline))
		c := dialRaw(t, ts.path)
		if _, err := c.Write([]byte("0009chunk0000")); err != nil {
			t.Fatal(err)
		}
		got, kind := readAll(t, c)
		want := strings.Repeat("0055"+line, 10_000) + "0000"
		if string(got) != want || kind != kindEOF {
			t.Fatalf("inline=%v: %d bytes (%s), want %d bytes", inline, len(got), kind, len(want))
		}
	}
}

// TestPooledRepliesStream: a pooled handler's write reaches the client
// while the handler is still running, as each reply_cb call does in git.
// The handler waits for the client to have seen its first packet, so the
// test cannot pass by timing.
func TestPooledRepliesStream(t *testing.T) {
	leakcheck.Check(t)
	seen := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if _, err := w.WriteString("first"); err != nil {
			return err
		}
		select {
		case <-seen:
		case <-time.After(5 * time.Second):
			return errors.New("the first packet never reached the client")
		}
		_, err := w.WriteString("second")
		return err
	})
	ts := startServer(t, h)
	c := dialRaw(t, ts.path)
	if _, err := c.Write([]byte("0008slow0000")); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 9)
	if _, err := io.ReadFull(c, first); err != nil || string(first) != "0009first" {
		t.Fatalf("first packet %q, %v", first, err)
	}
	close(seen)
	rest, kind := readAll(t, c)
	if string(rest) != "000asecond0000" || kind != kindEOF {
		t.Fatalf("rest %q (%s)", rest, kind)
	}
}

// TestClientCloseInterrupts: Close from another goroutine ends a call that
// waits for a reply.
func TestClientCloseInterrupts(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	ts := startServer(t, h)
	defer close(release)
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Call([]byte("wait")); errc <- err }()
	time.Sleep(100 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClientClosed) {
			t.Fatalf("interrupted call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt the call")
	}
	if _, err := c.Call([]byte("again")); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("call after Close: %v", err)
	}
}

// TestClientErrorSteps: errors say which step failed, as git's client does.
func TestClientErrorSteps(t *testing.T) {
	leakcheck.Check(t)
	var ce *ClientError
	_, err := Send(context.Background(), socketPath(t), []byte("ping"))
	if !errors.As(err, &ce) || ce.Op != "dial" {
		t.Fatalf("missing socket: %v", err)
	}
	s := startScripted(t, "", false)
	_, err = Send(context.Background(), s.path, []byte("ping"))
	if !errors.As(err, &ce) || ce.Op != "read" || !errors.Is(err, ErrIncompleteReply) {
		t.Fatalf("closed without reply: %v", err)
	}
}

// TestPooledPipelineHandOver: many pipelined requests on one connection,
// each answered by whichever worker is free, with a reply in two writes.
// Workers hand the connection to each other after every final write; an
// acknowledgement read from the wrong worker's channel stalls the stream
// (a bug once seen in BenchmarkPipelined).
func TestPooledPipelineHandOver(t *testing.T) {
	leakcheck.Check(t)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if _, err := w.Write(req[:len(req)/2]); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		_, err := w.Write(req[len(req)/2:])
		return err
	})
	ts := startServer(t, h, WithWorkers(8))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	const window, rounds = 64, 40
	req := make([]byte, 4096)
	for r := range rounds {
		for i := range window {
			binary.BigEndian.PutUint32(req, uint32(r*window+i))
			if err := c.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		for i := range window {
			got, err := c.Recv()
			if err != nil {
				t.Fatalf("round %d reply %d: %v", r, i, err)
			}
			if len(got) != len(req) || binary.BigEndian.Uint32(got) != uint32(r*window+i) {
				t.Fatalf("round %d reply %d: %d bytes, tag %d", r, i, len(got), binary.BigEndian.Uint32(got))
			}
		}
	}
}

// TestClientLetsGoOfLargeWriteBuffer: a request larger than clientKeep
// grows the Client's write buffer, which it lets go of once the request
// is written, queued or not, instead of holding that size for its life.
func TestClientLetsGoOfLargeWriteBuffer(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), WithMaxRequestSize(2*clientKeep))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	big := pattern(clientKeep+1, 3)
	for _, queued := range []bool{false, true} {
		if queued {
			if err := c.Queue(big); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		} else if err := c.Send(big); err != nil {
			t.Fatal(err)
		}
		if got := cap(c.wbuf); got > clientKeep {
			t.Errorf("queued %v: the write buffer keeps %d bytes after the request went out", queued, got)
		}
		got, err := c.Recv()
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("queued %v: reply of %d bytes, %v", queued, len(got), err)
		}
	}
}
