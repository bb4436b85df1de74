//go:build !race

package engine

import (
	"testing"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// TestOneShotAllocs: a git-style request (a connection of its own) costs
// three allocations, on the accept loop and on a worker alike: the
// connection's state and its handler's context (context.WithCancelCause
// makes two). Accepting it, its credentials and its reply allocate
// nothing. The client here uses raw system calls, which allocate nothing.
func TestOneShotAllocs(t *testing.T) {
	leakcheck.Check(t)
	for _, inline := range []bool{true, false} {
		ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(inline))
		sa := &unix.SockaddrUnix{Name: ts.path}
		msg := frame.AppendMessage(nil, []byte("ping"))
		want := string(msg)
		buf := make([]byte, 64)
		shot := func() {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := unix.Connect(fd, sa); err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Write(fd, msg); err != nil {
				t.Fatal(err)
			}
			got := 0
			for {
				n, err := unix.Read(fd, buf[got:])
				if n <= 0 || err != nil {
					break
				}
				got += n
			}
			if string(buf[:got]) != want {
				t.Fatalf("reply %q, want %q", buf[:got], want)
			}
		}
		for range 2000 { // the pools' and buffers' first rounds
			shot()
		}
		if n := testing.AllocsPerRun(500, shot); n > 3 {
			t.Errorf("inline=%v: %v allocations per one-shot request, want at most 3", inline, n)
		}
	}
}
