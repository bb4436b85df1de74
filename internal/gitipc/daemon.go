package gitipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/uds"
)

// The daemon's canned replies.
const (
	// bigRows is the line count of big and chunk (git's BIG_ROWS and
	// CHUNK_ROWS).
	bigRows = 10000
	// slowRows and slowDelay: slow writes 1,000 lines, sleeping 10 ms
	// after each (git's SLOW_ROWS and SLOW_DELAY_MS).
	slowRows  = 1000
	slowDelay = 10 * time.Millisecond
	// rowLen is one line, "big: " + 75 digits + "\n".
	rowLen = 81
)

// SendbytesCommand starts a sendbytes request; the ballast follows it.
const SendbytesCommand = "sendbytes "

// big holds the 10,000 lines of big and chunk, built once.
var big = sync.OnceValue(func() []byte {
	b := make([]byte, 0, bigRows*rowLen)
	for row := range bigRows {
		b = fmt.Appendf(b, "big: %075d\n", row)
	}
	return b
})

// Handler is the application of git's test daemon (test_app_cb). git hands
// its application a NUL-terminated copy of the request and reads it partly
// as a C string; cString reproduces that.
type Handler struct{}

// ServeIPC answers one request. "slow" sleeps and belongs on a worker; the
// others may run on the event loop (ServerOptions). The engine calls it
// from any of its goroutines, concurrently.
func (Handler) ServeIPC(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
	switch {
	case string(req) == "quit":
		// No reply: the client gets the terminator alone.
		return engine.ErrQuit
	case string(req) == "ping":
		_, err := w.WriteString("pong")
		return err
	case string(req) == "big":
		_, err := w.Write(big())
		return err
	case string(req) == "chunk":
		return writeRows(ctx, w, bigRows, 0)
	case string(req) == "slow":
		return writeRows(ctx, w, slowRows, slowDelay)
	case len(req) >= len(SendbytesCommand) && bytes.HasPrefix(req, []byte(SendbytesCommand)):
		var buf [32]byte // "rcvd:" + byte + up to 19 digits + "\n"
		_, err := w.Write(SendbytesReply(buf[:0], req[len(SendbytesCommand):]))
		return err
	}
	reply := append([]byte("unhandled command: "), cString(req)...)
	_, err := w.Write(reply)
	return err
}

// writeRows writes rows lines of big one write each, sleeping delay after
// each; it stops early when ctx ends (the client went away).
func writeRows(ctx context.Context, w *engine.ReplyWriter, rows int, delay time.Duration) error {
	b := big()
	var t *time.Timer
	if delay > 0 {
		t = time.NewTimer(delay)
		defer t.Stop()
	}
	for row := range rows {
		if _, err := w.Write(b[row*rowLen : (row+1)*rowLen]); err != nil {
			return err
		}
		if t == nil {
			continue
		}
		t.Reset(delay)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	return nil
}

// SendbytesRequest builds git's sendbytes request: SendbytesCommand and
// count copies of c.
func SendbytesRequest(count int, c byte) []byte {
	req := make([]byte, len(SendbytesCommand)+count)
	copy(req, SendbytesCommand)
	for i := len(SendbytesCommand); i < len(req); i++ {
		req[i] = c
	}
	return req
}

// SendbytesReply appends the daemon's answer to "sendbytes <ballast>": the
// ballast is read as a C string (it ends at the first NUL, and its first
// byte is then NUL when it is empty); "rcvd:<c><%08d len>\n" when every byte
// equals the first, else "errs:<count of other bytes>\n".
func SendbytesReply(dst, ballast []byte) []byte {
	p := cString(ballast)
	errs := 0
	for _, c := range p[min(1, len(p)):] {
		if c != p[0] {
			errs++
		}
	}
	if errs > 0 {
		dst = append(dst, "errs:"...)
		dst = strconv.AppendInt(dst, int64(errs), 10)
		return append(dst, '\n')
	}
	first := byte(0)
	if len(p) > 0 {
		first = p[0]
	}
	dst = append(dst, "rcvd:"...)
	dst = append(dst, first)
	dst = appendZeroPadded(dst, len(p), 8)
	return append(dst, '\n')
}

// appendZeroPadded appends n in decimal, zero-padded to width (C's %0*d for
// n >= 0).
func appendZeroPadded(dst []byte, n, width int) []byte {
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], int64(n), 10)
	for range width - len(d) {
		dst = append(dst, '0')
	}
	return append(dst, d...)
}

// cString returns b up to its first NUL: what C's %s and strlen see. The
// result aliases b.
func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// ServerOptions are the engine options of the test daemon with threads
// workers. Like git's daemon it checks nothing about the socket's directory
// (git's tests run in an ordinary 0755 directory); the socket itself stays
// private to its user, which git's clients of the same user never notice.
// Only "slow" blocks, so only it goes to the worker pool; the rest is
// answered on the event loop.
func ServerOptions(threads int) []engine.Option {
	return []engine.Option{
		engine.WithWorkers(max(threads, 1)),
		engine.WithInlineFilter(func(req []byte) bool { return string(req) != "slow" }),
		engine.WithListenOptions(uds.WithInsecureDir()),
	}
}

// Serve runs git's test daemon on path until a client sends quit (nil), ctx
// ends (nil), or the socket is stolen (engine.ErrSocketStolen). ready, if
// not nil, is called once the socket accepts connections. A live server at
// path gives an error matching uds.ErrInUse. Any goroutine may call it.
func Serve(ctx context.Context, path string, threads int, ready func()) error {
	s, err := engine.NewServer(path, Handler{}, ServerOptions(threads)...)
	if err != nil {
		return err
	}
	if ready != nil {
		ready()
	}
	err = s.Serve(ctx)
	if errors.Is(err, engine.ErrServerClosed) || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		return nil
	}
	return err
}
