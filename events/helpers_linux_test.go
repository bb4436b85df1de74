//go:build linux

package events

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// newLoop makes a Loop closed at the test's end, after leak checks are
// armed.
func newTestLoop(t testing.TB, opts ...Option) *Loop {
	t.Helper()
	l, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// pair adds one end of a socketpair to l as a connection speaking f and
// returns its ID and the other end, a blocking descriptor the test plays
// the peer with (closed at the test's end).
func pair(t testing.TB, l *Loop, f Format) (ConnID, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := l.AddConn(fds[0], f)
	if err != nil {
		unix.Close(fds[1])
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	return id, fds[1]
}

// checked starts leak checks and returns a context that ends the test's
// waits after a while.
func checked(t *testing.T) context.Context {
	t.Helper()
	leakcheck.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// next is WaitEvent that fails the test on error.
func next(t testing.TB, ctx context.Context, l *Loop) Event {
	t.Helper()
	ev, err := l.WaitEvent(ctx)
	if err != nil {
		t.Fatalf("WaitEvent: %v", err)
	}
	return ev
}

// expect waits for the next event and checks its kind and connection.
func expect(t testing.TB, ctx context.Context, l *Loop, k Kind, id ConnID) Event {
	t.Helper()
	ev := next(t, ctx, l)
	if ev.Kind != k || (id != 0 && ev.Conn != id) {
		t.Fatalf("got %v on %d (err %v, data %q), want %v on %d", ev.Kind, ev.Conn, ev.Err, ev.Data, k, id)
	}
	return ev
}

// quiet checks that no event comes within d.
func quiet(t testing.TB, l *Loop, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ev, err := l.WaitEvent(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want no event, got %v on %d (err %v, data %q), %v", ev.Kind, ev.Conn, ev.Err, ev.Data, err)
	}
}

// enc encodes one message in format f.
func enc(t testing.TB, f Format, userType uint8, p []byte) []byte {
	t.Helper()
	switch f {
	case LibIPC:
		b, err := frame.AppendLibIPC(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case LibIPCC:
		b, err := frame.AppendLibIPCC(nil, frame.CFrame{Type: frame.CData, UserType: userType, Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return frame.AppendMessage(nil, p)
}

// writeAll writes b on a blocking descriptor.
func writeAll(t testing.TB, fd int, b []byte) {
	t.Helper()
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			t.Fatalf("peer write: %v", err)
		}
		b = b[n:]
	}
}

// readFrame reads one frame of format f from a blocking descriptor and
// returns its payload and user type.
func readFrame(t testing.TB, fd int, f Format) ([]byte, uint8) {
	t.Helper()
	readN := func(n int) []byte {
		b := make([]byte, n)
		for got := 0; got < n; {
			m, err := unix.Read(fd, b[got:])
			if err != nil || m == 0 {
				t.Fatalf("peer read: %d, %v", m, err)
			}
			got += m
		}
		return b
	}
	switch f {
	case LibIPC:
		return readN(int(binary.BigEndian.Uint32(readN(4)))), 0
	case LibIPCC:
		h := readN(6)
		return readN(int(binary.BigEndian.Uint32(h[1:5]))), h[5]
	}
	var msg []byte
	for {
		h := readN(4)
		kind, _, _, err := frame.Decode(h)
		if err != nil {
			t.Fatalf("peer decode: %v", err)
		}
		if kind == frame.Flush {
			return msg, 0
		}
		var n int
		for _, c := range h {
			n <<= 4
			switch {
			case c >= '0' && c <= '9':
				n |= int(c - '0')
			default:
				n |= int(c-'a') + 10
			}
		}
		msg = append(msg, readN(n-4)...)
	}
}
