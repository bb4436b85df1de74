package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// postLog is a handler that keeps what it was given, in order, with
// whether each request came as a one-way message, and answers every one
// (a one-way message's answer must be dropped).
type postLog struct {
	mu     sync.Mutex
	reqs   [][]byte
	oneWay []bool
}

func (l *postLog) ServeIPC(_ context.Context, req []byte, w *ReplyWriter) error {
	l.mu.Lock()
	l.reqs = append(l.reqs, bytes.Clone(req))
	l.oneWay = append(l.oneWay, w.OneWay())
	l.mu.Unlock()
	if _, err := w.Write([]byte("re:")); err != nil {
		return err
	}
	_, err := w.Write(req)
	return err
}

func (l *postLog) reset() {
	l.mu.Lock()
	l.reqs, l.oneWay = nil, nil
	l.mu.Unlock()
}

// requests returns the requests logged so far, in order.
func (l *postLog) requests() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.reqs))
	for i, r := range l.reqs {
		out[i] = string(r)
	}
	return out
}

// blockOn is next, except that a request of word signals blocked and
// waits for its context to end (the server closing, say).
func blockOn(word string, blocked chan<- struct{}, next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == word {
			blocked <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}
		return next.ServeIPC(ctx, req, w)
	})
}

func (l *postLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

// testPost mixes posted messages with calls on c, whose server logs into
// l, and checks that every call gets its own reply, that the server saw
// everything in order, and that the handler saw posted messages as
// one-way exactly when marked says the transport carries the mark.
func testPost(t *testing.T, c *Client, l *postLog, marked bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var sent [][]byte
	var posted []bool
	for i := range 400 {
		n := rng.IntN(200)
		if rng.IntN(20) == 0 {
			n = 40_000 + rng.IntN(100_000) // beyond a record of a 64 KiB ring
		}
		msg := append(fmt.Appendf(nil, "%d:", i), pattern(n, i)...)
		sent = append(sent, msg)
		if rng.IntN(4) != 0 {
			posted = append(posted, true)
			if err := c.Post(msg); err != nil {
				t.Fatalf("Post %d: %v", i, err)
			}
			continue
		}
		posted = append(posted, false)
		got, err := c.Call(msg)
		if err != nil || !bytes.Equal(got, append([]byte("re:"), msg...)) {
			t.Fatalf("Call %d after posts: %.20q (%d bytes), %v", i, got, len(got), err)
		}
	}
	if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("Recv with only posted messages out: %v, want ErrNoRequest", err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return l.len() == len(sent) })
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range sent {
		if !bytes.Equal(l.reqs[i], sent[i]) {
			t.Fatalf("the server's message %d is %.20q, want %.20q", i, l.reqs[i], sent[i])
		}
		if want := posted[i] && marked; l.oneWay[i] != want {
			t.Fatalf("message %d: OneWay %v, want %v", i, l.oneWay[i], want)
		}
	}
	l.reqs, l.oneWay = nil, nil
}

// TestPostSocket: on a persistent socket connection a posted message is a
// request whose reply the Client drops, before the reply of a later call
// and at most postWindow at a time while the caller only posts.
func TestPostSocket(t *testing.T) {
	leakcheck.Check(t)
	l := &postLog{}
	ts := startServer(t, l)
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testPost(t, c, l, false)

	// Only posts: the dropped replies are read as they come due.
	for i := range 3 * postWindow {
		if err := c.Post([]byte("p")); err != nil {
			t.Fatal(err)
		}
		if c.dropping >= postWindow {
			t.Fatalf("after post %d: %d replies to drop, want fewer than %d", i, c.dropping, postWindow)
		}
	}
	if got, err := c.Call([]byte("last")); err != nil || string(got) != "re:last" {
		t.Fatalf("Call after posts: %q, %v", got, err)
	}
	if c.dropping != 0 || c.queue.n != 0 {
		t.Fatalf("after a call: %d replies to drop, %d entries; want none", c.dropping, c.queue.n)
	}
}

// TestPostGitServer: a server that answers one request per connection gets
// each posted message on its own connection, and Post waits for the reply
// it drops, also behind a request sent before it.
func TestPostGitServer(t *testing.T) {
	leakcheck.Check(t)
	l := &postLog{}
	ts := startServer(t, l, WithPersistent(false))
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l.reset() // the handler saw the persistent handshake, as git's would
	if err := c.Post([]byte("alone")); err != nil {
		t.Fatal(err)
	}
	if n := l.len(); n != 1 {
		t.Fatalf("the server has %d messages after Post returned, want 1", n)
	}
	if err := c.Send([]byte("req")); err != nil {
		t.Fatal(err)
	}
	if err := c.Post([]byte("behind")); err != nil { // held behind req
		t.Fatal(err)
	}
	if got, err := c.Recv(); err != nil || string(got) != "re:req" {
		t.Fatalf("Recv = %q, %v", got, err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := l.len(); n != 3 {
		t.Fatalf("the server has %d messages after Flush, want 3", n)
	}
	l.reset()
	testPost(t, c, l, false)
}

// TestPostClosed: Post after Close fails with ErrClientClosed, and Post to
// a server that is gone fails with ErrNotProcessed.
func TestPostClosed(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, &postLog{})
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	ts.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var perr error
	for range 3 * postWindow { // the socket may take some before it fails
		if perr = c.Post([]byte("x")); perr != nil {
			break
		}
	}
	if !errors.Is(perr, ErrNotProcessed) {
		t.Fatalf("Post to a closed server: %v, want ErrNotProcessed", perr)
	}
	c.Close()
	if err := c.Post([]byte("x")); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("Post after Close: %v, want ErrClientClosed", err)
	}
}

// TestPostsLostOnSocket: on a socket, messages posted as requests whose
// replies were never read when the connection ended may be lost: the
// next request fails with ErrNotProcessed instead of going out on a new
// connection, where its reply would vouch for them, whichever call found
// the end; the request after it goes out.
func TestPostsLostOnSocket(t *testing.T) {
	leakcheck.Check(t)
	blocked := make(chan struct{}, 1)
	l := &postLog{}
	h := blockOn("block", blocked, l)
	path := socketPath(t)
	a := startServerAt(t, path, h)
	c := dialClient(t, path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	postAll(t, c, "block", "lost")
	<-blocked
	a.Close()
	for range 3 * postWindow { // Post's reads of the replies find the end
		if c.Post([]byte("later")) != nil {
			break
		}
	}
	startServerAt(t, path, &postLog{})
	lostThenServed(t, c, "re:")
	if n := l.len(); n != 0 {
		t.Errorf("the closed server served %d posted messages after block", n)
	}
}

// TestPostBehindRequestToGitServer: to a git server (one request per
// connection), a message posted while a request waits for its reply is
// held for its turn, which comes with that reply: Recv sends it, so that
// a caller that then closes has lost nothing, and the reply Recv returned
// stays whole.
func TestPostBehindRequestToGitServer(t *testing.T) {
	leakcheck.Check(t)
	l := &postLog{}
	ts := startServer(t, l)
	c, err := Dial(context.Background(), ts.path, WithGitStyle())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Send([]byte("A")); err != nil {
		t.Fatal(err)
	}
	if err := c.Post([]byte("P")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := c.Recv()
	if err != nil || string(got) != "re:A" {
		t.Fatalf("Recv: %q, %v", got, err)
	}
	c.Close()
	if got := l.requests(); len(got) != 2 || got[1] != "P" {
		t.Fatalf("the server got %q, want A then P", got)
	}
}

// TestLargePostLostOnSocket: a message posted alone whose reply Post reads
// at once (it fills the window of posted bytes) and never gets, the server
// gone, makes the next request fail with ErrNotProcessed.
func TestLargePostLostOnSocket(t *testing.T) {
	leakcheck.Check(t)
	started := make(chan struct{}, 1)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		started <- struct{}{}
		<-ctx.Done() // until the server closes
		return ctx.Err()
	})
	path := socketPath(t)
	a := startServerAt(t, path, h)
	c := dialClient(t, path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		<-started
		a.Close()
	}()
	_ = c.Post(make([]byte, postWindowBytes)) // its reply never comes
	startServerAt(t, path, &postLog{})
	lostThenServed(t, c, "re:")
}

// TestPostAfterIdleCloseOnSocket: a message posted (staged, not yet
// written) on a connection the server closed for idleness goes out on a
// new one with the request behind it, and nothing counts as lost: the
// requests after it are served.
func TestPostAfterIdleCloseOnSocket(t *testing.T) {
	leakcheck.Check(t)
	l := &postLog{}
	c, _ := idleClosedClient(t, socketPath(t), l)
	if err := c.Post([]byte("posted")); err != nil {
		t.Fatal(err)
	}
	for _, req := range []string{"after", "again"} {
		if got, err := c.Call([]byte(req)); err != nil || string(got) != "re:"+req {
			t.Fatalf("Call(%s) after a post on an idle-closed connection: %q, %v", req, got, err)
		}
	}
	if got := l.requests(); len(got) != 4 || got[1] != "posted" {
		t.Fatalf("the server got %q", got)
	}
}

// idleClosedClient starts a server at path with a short idle timeout and
// returns a Client whose one connection to it made a call and was then
// closed for idleness (the Client does not know yet), and the server.
func idleClosedClient(t *testing.T, path string, h Handler) (*Client, *testServer) {
	t.Helper()
	ts := startServerAt(t, path, h, WithIdleTimeout(50*time.Millisecond))
	c := dialClient(t, path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Call([]byte("first")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 0 })
	return c, ts
}

// TestStagedPostLostOnSocket: a message posted (staged) on a connection
// the server closed for idleness, whose write then finds no server to
// reconnect to, never went out: the request after it, once a server is
// back, fails with ErrNotProcessed rather than vouch for it.
func TestStagedPostLostOnSocket(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	c, a := idleClosedClient(t, path, &postLog{})
	a.Close()
	_ = c.Post(make([]byte, clientBatchBytes)) // a full batch: written at once, and no server
	l := &postLog{}
	startServerAt(t, path, l)
	lostThenServed(t, c, "re:")
}

// TestStagedBehindUnansweredPost: posts in flight, one answered and one
// whose handler the server's stop cancelled, then a queued request and a
// Send that find the server gone: neither was written, and each says so
// (ErrNotProcessed), the Send in its own error. Reading the answered
// post's reply off the dead connection (settlePosted) took entries from
// the queue, and the staged requests after them went without their
// errors: the Send returned nil.
func TestStagedBehindUnansweredPost(t *testing.T) {
	leakcheck.Check(t)
	blocked := make(chan struct{}, 1)
	path := socketPath(t)
	a := startServerAt(t, path, blockOn("block", blocked, HandlerFunc(echoRaw)))
	c := dialClient(t, path)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	postAll(t, c, "m1", "block")
	<-blocked
	a.Close()
	if err := c.Queue([]byte("r1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Send([]byte("r2")); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Send to a closed server: %v, want ErrNotProcessed", err)
	}
	if _, err := c.Recv(); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Recv for the queued request never written: %v, want ErrNotProcessed", err)
	}
	if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("a Send that failed left a reply to read: %v", err)
	}
}
