package engine

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestOneShotWakesClientOnce: a git-style client that writes its request
// and sleeps in read(2) is woken by its reply and by nothing else. The
// server reads the request off the socket only after the reply is
// written; reading it first frees the client's send buffer, and the
// kernel then wakes the client, asleep on that socket, for nothing. The
// client's thread counts its sleeps (voluntary context switches), at most
// one per request. (On a worker the reply is empty: a worker sends a
// handler's first Write at once, and the end of the reply after it.)
func TestOneShotWakesClientOnce(t *testing.T) {
	needProcs(t, 2)
	leakcheck.Check(t)
	req := frame.AppendMessage(nil, bytes.Repeat([]byte("r"), 100))
	for _, tc := range []struct {
		name   string
		inline bool
		h      HandlerFunc
		want   []byte
	}{
		{"accept loop", true, echoRaw, req},
		{"worker", false, func(context.Context, []byte, *ReplyWriter) error { return nil }, frame.AppendFlush(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.h, WithInlineHandlers(tc.inline))
			roundTrip(t, ts.path, req, tc.want) // the server's buffers, made once
			const rounds = 300
			sleeps, err := countSleeps(func() error {
				for range rounds {
					if err := roundTrip(t, ts.path, req, tc.want); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// A client held up between connect and write past the accept
			// loop's grace (a loaded machine) is served by an event loop
			// instead, correctly, at a few sleeps more; those are allowed
			// for, and there must be few of them.
			missed := int64(rounds+1) - int64(ts.Stats().OneShot)
			if missed > rounds/10 {
				t.Fatalf("%d of %d requests took the git-style path", rounds+1-missed, rounds+1)
			}
			// Some more for the runtime's own waits on this thread: woken first
			// by the read of the request, it slept about twice per request.
			if limit := rounds + rounds/4 + 4*missed; sleeps > limit {
				t.Errorf("the client slept %d times in %d round trips (%d off the git-style path): woken before its reply", sleeps, rounds, missed)
			}
			t.Logf("%d sleeps in %d round trips, %d off the git-style path", sleeps, rounds, missed)
		})
	}
}

// countSleeps runs f on one OS thread and returns how many times that
// thread slept (voluntary context switches) meanwhile.
func countSleeps(f func() error) (int64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &before); err != nil {
		return 0, err
	}
	err := f()
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &after); err != nil {
		return 0, err
	}
	return int64(after.Nvcsw - before.Nvcsw), err
}

// roundTrip is git's client on a blocking socket: connect, write the
// request, read until the whole reply (want) is in, close.
func roundTrip(t *testing.T, path string, req, want []byte) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// A lost reply fails the test instead of hanging it.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		return err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return err
	}
	if _, err := unix.Write(fd, req); err != nil {
		return err
	}
	var buf [512]byte
	got := 0
	for got < len(want) {
		n, err := unix.Read(fd, buf[got:])
		if err != nil {
			return err
		}
		if n == 0 {
			t.Fatalf("the reply ended after %d of %d bytes", got, len(want))
		}
		got += n
	}
	if !bytes.Equal(buf[:got], want) {
		t.Fatalf("reply %q, want %q", buf[:got], want)
	}
	return nil
}
