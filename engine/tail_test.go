package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// tailReply is larger than a Unix socket's buffer, so that most of an
// inline reply waits in the connection's tail.
const tailReply = 3 << 20

// bigInline answers each request with tailReply bytes, by Write or, for
// a request of "uncopied", by WriteUncopied (the gathered path).
func bigInline(big []byte) Handler {
	return HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "uncopied" {
			_, err := w.WriteUncopied(big)
			return err
		}
		for p := big; len(p) > 0; p = p[min(len(p), 100<<10):] {
			if _, err := w.Write(p[:min(len(p), 100<<10)]); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestInlineReplyAfterHalfClose: a persistent client that sends its
// request and shuts down its writing side gets the whole of an inline
// reply far larger than the socket holds (gnet closes the connection as
// soon as it reads the end of the input, and would drop what its own
// buffer still held); the server then closes the connection, and the
// handler's context ends with it (it would stay among the server's).
func TestInlineReplyAfterHalfClose(t *testing.T) {
	leakcheck.Check(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), tailReply/16)
	ctxs := make(chan context.Context, 2)
	inner := bigInline(big)
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		ctxs <- ctx
		return inner.ServeIPC(ctx, req, w)
	})
	ts := startServer(t, h, WithInlineHandlers(true))
	for _, req := range []string{"copied", "uncopied"} {
		t.Run(req, func(t *testing.T) {
			c := rawPersistent(t, ts.path).(*net.UnixConn)
			defer c.Close()
			if _, err := c.Write(frame.AppendMessage(nil, []byte(req))); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// The server reads the end of the input while the reply
			// waits for this reader.
			time.Sleep(100 * time.Millisecond)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			msg, rest := decodeMessage(t, got)
			if !bytes.Equal(msg, big) || len(rest) != 0 {
				t.Fatalf("got a reply of %d bytes and %d bytes after it, want %d and none", len(msg), len(rest), len(big))
			}
			ctx := <-ctxs
			waitFor(t, func() bool { return ctx.Err() != nil })
		})
	}
	if st := ts.Stats(); st.Rescued == 0 {
		t.Errorf("no reply finished after the half close: %+v", st)
	}
}

// TestInlineTailThenPipelined: requests pipelined behind one whose inline
// reply waits in the tail are served once the tail is written, in order.
func TestInlineTailThenPipelined(t *testing.T) {
	leakcheck.Check(t)
	big := bytes.Repeat([]byte("fedcba9876543210"), tailReply/16)
	ts := startServer(t, bigInline(big), WithInlineHandlers(true))
	c := rawPersistent(t, ts.path)
	var reqs []byte
	for _, r := range []string{"copied", "uncopied", "copied"} {
		reqs = frame.AppendMessage(reqs, []byte(r))
	}
	if _, err := c.Write(reqs); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the first reply fills the socket
	r := frame.NewReader(c, frame.Persistent, 2*tailReply)
	for i := range 3 {
		msg, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if !bytes.Equal(msg, big) {
			t.Fatalf("reply %d: %d bytes, not the %d sent", i, len(msg), len(big))
		}
	}
}

// decodeMessage decodes the pkt-line message at the start of b: its
// payload, and the bytes after its flush.
// writeHalfClose writes b on c, shuts c's writing side down and returns
// all the server sends until it closes the connection.
func writeHalfClose(t *testing.T, c *net.UnixConn, b []byte) []byte {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func decodeMessage(t *testing.T, b []byte) (msg, rest []byte) {
	t.Helper()
	for {
		kind, p, n, err := frame.Decode(b)
		if err != nil || kind == frame.NeedMore {
			t.Fatalf("reply cut after %d payload bytes: %v", len(msg), err)
		}
		b = b[n:]
		if kind == frame.Flush {
			return msg, b
		}
		msg = append(msg, p...)
	}
}

// TestInlineTailsBackToBack: many pipelined requests whose replies each
// leave a short tail, read as fast as they come: each tail's writer hands
// the connection back while the loop may already have started the next
// one's, and every reply arrives, whole and in order.
func TestInlineTailsBackToBack(t *testing.T) {
	leakcheck.Check(t)
	const n, size = 64, 400 << 10 // a little more than the socket holds
	ts := startServer(t, HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		reply := bytes.Repeat(req[:1], size)
		_, err := w.Write(reply)
		return err
	}), WithInlineHandlers(true))
	c := rawPersistent(t, ts.path).(*net.UnixConn)
	var reqs []byte
	for i := range n {
		reqs = frame.AppendMessage(reqs, []byte{byte('a' + i%26)})
	}
	go func() { _, _ = c.Write(reqs) }() // the reads below make room for it
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := frame.NewReader(c, frame.Persistent, 2*size)
	for i := range n {
		msg, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("reply %d of %d: %v", i+1, n, err)
		}
		if len(msg) != size || msg[0] != byte('a'+i%26) || msg[size-1] != msg[0] {
			t.Fatalf("reply %d: %d bytes of %q, want %d of %q", i+1, len(msg), msg[:1], size, byte('a'+i%26))
		}
	}
}

// TestPipelinedAfterHalfClose: requests a client pipelined behind one
// whose reply is still being written when it shuts down its writing side
// are answered too, in order, before the server closes: inline (the first
// reply in a tail) and pooled (a handler that takes a while).
func TestPipelinedAfterHalfClose(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), tailReply/16)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		switch string(req) {
		case "big":
			_, err := w.Write(big)
			return err
		case "slow":
			time.Sleep(50 * time.Millisecond)
			_, err := w.Write(big)
			return err
		}
		_, err := w.Write(append([]byte("re: "), req...))
		return err
	})
	for _, mode := range []string{"inline", "pooled"} {
		t.Run(mode, func(t *testing.T) {
			leakcheck.Check(t)
			ts := startServer(t, h, WithInlineHandlers(mode == "inline"), WithWorkers(2))
			c := rawPersistent(t, ts.path).(*net.UnixConn)
			defer c.Close()
			first := "big"
			if mode == "pooled" {
				first = "slow"
			}
			if _, err := c.Write(frame.AppendMessage(nil, []byte(first))); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the first is being answered
			var rest []byte
			for _, r := range []string{"one", "two", "three"} {
				rest = frame.AppendMessage(rest, []byte(r))
			}
			rest = append(rest, "0008par"...) // a request cut short: dropped
			if _, err := c.Write(rest); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the server reads the end first
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			msg, got := decodeMessage(t, got)
			if !bytes.Equal(msg, big) {
				t.Fatalf("first reply %d bytes, want %d", len(msg), len(big))
			}
			for _, want := range []string{"re: one", "re: two", "re: three"} {
				msg, got = decodeMessage(t, got)
				if string(msg) != want {
					t.Fatalf("reply %q, want %q", msg, want)
				}
			}
			if len(got) != 0 {
				t.Fatalf("%d bytes after the last reply", len(got))
			}
		})
	}
}

// TestHalfCloseNeverServesPartOfARequest: when the loop had already taken
// in the first part of a request pipelined behind one being answered (the
// assembler holds it), and the peer half-closes after the rest, the rest
// alone is never served as a request: the client gets the first reply and
// then the end, or the whole second request's reply, never one for a
// request it did not send.
func TestHalfCloseNeverServesPartOfARequest(t *testing.T) {
	const second = 300 << 10 // more than the assembler takes in without copying
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "slow" {
			time.Sleep(50 * time.Millisecond)
		}
		_, err := fmt.Fprintf(w, "re: %d bytes", len(req))
		return err
	})
	leakcheck.Check(t)
	ts := startServer(t, h, WithWorkers(2))
	c := rawPersistent(t, ts.path).(*net.UnixConn)
	defer c.Close()
	r2 := frame.AppendMessage(nil, bytes.Repeat([]byte("x"), second))
	cut := 3 * frame.MaxPacketSize // whole packets: the rest starts at a header
	first := append(frame.AppendMessage(nil, []byte("slow")), r2[:cut]...)
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the loop took the first part in
	got := writeHalfClose(t, c, r2[cut:])
	msg, got := decodeMessage(t, got)
	if string(msg) != "re: 4 bytes" {
		t.Fatalf("first reply %q", msg)
	}
	if len(got) > 0 {
		if msg, _ = decodeMessage(t, got); string(msg) != fmt.Sprintf("re: %d bytes", second) {
			t.Fatalf("a reply to a request never sent: %q", msg)
		}
	}
}

// TestPooledReplyAfterInlineTail: inline replies batched behind a request
// that goes to the pool are written before it is dispatched, and what the
// socket does not take of them (a small send buffer here) waits in the
// tail; the pooled reply must follow the whole of them, not cut into the
// middle of one, whether the socket is read at once or late.
func TestPooledReplyAfterInlineTail(t *testing.T) {
	leakcheck.Check(t)
	small := bytes.Repeat([]byte("0123456789abcdef"), 30000/16)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "pooled" {
			_, err := w.WriteString("from the pool")
			return err
		}
		_, err := w.Write(small)
		return err
	})
	ts := startServer(t, h, WithEventLoops(1), WithSendBuffer(4096),
		WithInlineFilter(func(req []byte) bool { return string(req) != "pooled" }))
	for round := range 20 {
		c := rawPersistent(t, ts.path).(*net.UnixConn)
		var reqs []byte
		for _, r := range []string{"inline", "pooled", "inline", "pooled"} {
			reqs = frame.AppendMessage(reqs, []byte(r))
		}
		if _, err := c.Write(reqs); err != nil {
			t.Fatal(err)
		}
		if round%2 == 1 {
			time.Sleep(20 * time.Millisecond) // the socket fills before it is read
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := frame.NewReader(c, frame.Persistent, 1<<20)
		for i, want := range [][]byte{small, []byte("from the pool"), small, []byte("from the pool")} {
			msg, err := r.ReadMessage()
			if err != nil {
				t.Fatalf("round %d, reply %d: %v", round, i, err)
			}
			if !bytes.Equal(msg, want) {
				t.Fatalf("round %d, reply %d: %d bytes (%.20q...), want %d", round, i, len(msg), msg, len(want))
			}
		}
		c.Close()
		waitFor(t, func() bool { return ts.Stats().Open == 0 })
	}
}

// TestBatchedRepliesOutliveClose: inline replies batched behind a request
// that then ends the connection (its handler panics, or it is no pkt-line
// at all) still go out whole, however little of them the socket takes at
// once (a small send buffer here), before the connection closes.
func TestBatchedRepliesOutliveClose(t *testing.T) {
	leakcheck.Check(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 30000/16)
	h := HandlerFunc(func(_ context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "panic" {
			panic("handler")
		}
		_, err := w.Write(big)
		return err
	})
	ts := startServer(t, h, WithEventLoops(1), WithSendBuffer(4096), WithInlineHandlers(true))
	for _, tc := range []struct {
		name string
		last []byte
	}{
		{"panic", frame.AppendMessage(nil, []byte("panic"))},
		{"protocol error", []byte("zzzz not pkt-line")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawPersistent(t, ts.path).(*net.UnixConn)
			defer c.Close()
			reqs := frame.AppendMessage(frame.AppendMessage(nil, []byte("a")), []byte("b"))
			if _, err := c.Write(append(reqs, tc.last...)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the socket fills before it is read
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				var msg []byte
				msg, got = decodeMessage(t, got)
				if !bytes.Equal(msg, big) {
					t.Fatalf("reply %d: %d bytes, want %d", i, len(msg), len(big))
				}
			}
			if len(got) != 0 {
				t.Fatalf("%d bytes after the two replies", len(got))
			}
		})
	}
}
