package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// childEnv selects a helper-process role when the test binary re-executes
// itself (see child_test.go).
const childEnv = "PKTIPC_ENGINE_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	leakcheck.VerifyTestMain(m)
}

// socketPath returns a path in a fresh private directory (short, so it fits
// sun_path).
func socketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

// gitDaemon answers like git's test daemon for the commands these tests use.
func gitDaemon(ctx context.Context, req []byte, w *ReplyWriter) error {
	switch string(req) {
	case "ping":
		_, err := w.WriteString("pong")
		return err
	case "quit":
		return ErrQuit
	case "slowping":
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		_, err := w.WriteString("pong")
		return err
	}
	cmd := req
	if i := bytes.IndexByte(cmd, 0); i >= 0 {
		cmd = cmd[:i] // git prints the request as a C string
	}
	_, err := w.WriteString("unhandled command: " + string(cmd))
	return err
}

type testServer struct {
	*Server
	path string
	errc chan error
}

// startServer runs a server until the test ends and checks Serve's result.
func startServer(t testing.TB, h Handler, opts ...Option) *testServer {
	t.Helper()
	return startServerAt(t, socketPath(t), h, opts...)
}

// pattern is n bytes that differ with seed.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

// startServerAt is startServer at path.
func startServerAt(t testing.TB, path string, h Handler, opts ...Option) *testServer {
	t.Helper()
	s, err := NewServer(path, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, path: path, errc: make(chan error, 1)}
	go func() { ts.errc <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-ts.errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

func dialRaw(t testing.TB, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// closeKind is how a connection ended after the bytes a test read.
type closeKind string

const (
	kindEOF   closeKind = "EOF"
	kindReset closeKind = "RST"
)

// readAll reads until the peer closes and says how it closed.
func readAll(t testing.TB, c net.Conn) ([]byte, closeKind) {
	t.Helper()
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return out, kindEOF
		case errors.Is(err, syscall.ECONNRESET):
			return out, kindReset
		default:
			t.Fatalf("read: %v (after %d bytes)", err, len(out))
		}
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	waitWithin(t, 10*time.Second, cond)
}

// waitWithin is waitFor with a limit of d, for conditions that take a
// while on a loaded machine under the race detector.
func waitWithin(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echoRaw replies with the request.
func echoRaw(_ context.Context, req []byte, w *ReplyWriter) error {
	_, err := w.Write(req)
	return err
}

// needProcs skips a test whose premise needs n processors of the Go
// scheduler (GOMAXPROCS), as a ring watch does (one to run and one left
// over to poll the network) and a thread that sleeps in read(2) while the
// server runs beside it, when run with fewer (go test -cpu=1).
func needProcs(t testing.TB, n int) {
	t.Helper()
	if p := runtime.GOMAXPROCS(0); p < n {
		t.Skipf("needs GOMAXPROCS >= %d, have %d", n, p)
	}
}

// lostThenServed: c's next Call fails with ErrNotProcessed, for messages
// posted on its last connection that may be lost, and the Call after it
// is served; its reply is the request ("next") after prefix.
func lostThenServed(t *testing.T, c *Client, prefix string) {
	t.Helper()
	if _, err := c.Call([]byte("after lost")); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Call after posted messages were lost: %v, want ErrNotProcessed", err)
	}
	if got, err := c.Call([]byte("next")); err != nil || string(got) != prefix+"next" {
		t.Fatalf("the next Call: %q, %v", got, err)
	}
}

// postAll posts msgs on c and flushes them: one batch.
func postAll(t *testing.T, c *Client, msgs ...string) {
	t.Helper()
	for _, msg := range msgs {
		if err := c.Post([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}
