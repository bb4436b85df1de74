//go:build linux

package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/uds"
)

var formats = []Format{PktLine, LibIPC, LibIPCC}

// Every kind, through a service by name: Connection, MessageRx,
// MessageTx, Disconnection, in that order for one client.
func TestServiceEvents(t *testing.T) {
	ctx := checked(t)
	dir := filepath.Join(t.TempDir(), "run")
	srv := newTestLoop(t, WithRunDir(dir))
	cli := newTestLoop(t, WithRunDir(dir))
	ln, err := srv.Listen("svc", LibIPC)
	if err != nil {
		t.Fatal(err)
	}
	id, err := cli.Connect(ctx, "svc", LibIPC)
	if err != nil {
		t.Fatal(err)
	}
	ev := expect(t, ctx, srv, Connection, 0)
	if ev.Listener != ln || ev.Conn == ln || ev.Conn == 0 {
		t.Fatalf("Connection %+v, listener %d", ev, ln)
	}
	sc := ev.Conn
	if err := cli.Schedule(id, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	expect(t, ctx, cli, MessageTx, id)
	ev = expect(t, ctx, srv, MessageRx, sc)
	if string(ev.Data) != "ping" {
		t.Fatalf("got %q", ev.Data)
	}
	if err := cli.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	ev = expect(t, ctx, srv, Disconnection, sc)
	if ev.Err != nil {
		t.Fatalf("clean close reported %v", ev.Err)
	}
	if err := srv.Write(sc, []byte("x")); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("write after the end: %v", err)
	}
	if err := cli.CloseConn(id); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("second close: %v", err)
	}
	// The service's socket goes with it.
	if err := srv.CloseConn(ln); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "svc")); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

func TestNames(t *testing.T) {
	checked(t)
	l := newTestLoop(t, WithRunDir(filepath.Join(t.TempDir(), "run")))
	for _, bad := range []string{"", ".", "..", "a/b", "a\x00b", strings.Repeat("x", 256)} {
		if _, err := l.Listen(bad, PktLine); !errors.Is(err, ErrBadName) {
			t.Errorf("Listen(%q): %v", bad, err)
		}
	}
	t.Setenv("RUNDIR", "/x/y")
	t.Setenv("IPC_RUNDIR", "/p/q")
	t.Setenv("XDG_RUNTIME_DIR", "/r")
	for l, want := range map[Layout]string{Native: "/r/pktipc", LibIPCLayout: "/x/y", LibIPCCLayout: "/p/q"} {
		if got := RunDir(l); got != want {
			t.Errorf("RunDir(%d) = %q, want %q", l, got, want)
		}
	}
	t.Setenv("RUNDIR", "")
	t.Setenv("IPC_RUNDIR", "")
	if RunDir(LibIPCLayout) != "/tmp/.libipc-run" || RunDir(LibIPCCLayout) != "/run/ipc" {
		t.Errorf("LibIPC defaults: %q %q", RunDir(LibIPCLayout), RunDir(LibIPCCLayout))
	}
}

// LibIPC's layout takes <path>.lock with flock: a second instance fails
// while the first lives, and the lock file stays (as LibIPC leaves it).
func TestLibIPCLock(t *testing.T) {
	checked(t)
	dir := filepath.Join(t.TempDir(), "run")
	t.Setenv("RUNDIR", dir)
	a := newTestLoop(t, WithLayout(LibIPCLayout))
	b := newTestLoop(t, WithLayout(LibIPCLayout))
	id, err := a.Listen("pong", LibIPC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Listen("pong", LibIPC); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Listen in one Loop: %v", err)
	}
	if _, err := b.Listen("pong", LibIPC); !errors.Is(err, ErrLocked) {
		t.Fatalf("second instance: %v", err)
	}
	if err := a.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pong.lock")); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	if _, err := b.Listen("pong", LibIPC); err != nil {
		t.Fatalf("after the first ended: %v", err)
	}
}

// TestLibIPCLockNoFollow: Listen does not follow a symlink planted where
// its lock file goes: no file appears at the link's target, and Listen
// fails.
func TestLibIPCLockNoFollow(t *testing.T) {
	checked(t)
	base := t.TempDir()
	dir := filepath.Join(base, "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(base, "victim")
	if err := os.Symlink(target, filepath.Join(dir, "pong.lock")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RUNDIR", dir)
	l := newTestLoop(t, WithLayout(LibIPCLayout))
	if _, err := l.Listen("pong", LibIPC); err == nil {
		t.Fatal("Listen with its lock file a symlink succeeded")
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the link's target: %v, want it never made", err)
	}
}

// Frames coalesced in one write and split over many come out whole, in
// order, for every format; an empty message is a message.
func TestReassembly(t *testing.T) {
	ctx := checked(t)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			l := newTestLoop(t)
			id, peer := pair(t, l, f)
			var want [][]byte
			var stream []byte
			for i := 0; i < 300; i++ {
				p := bytes.Repeat([]byte{byte(i)}, (i*7919)%3000)
				if f == LibIPC && len(p) == 0 {
					p = []byte{1}
				}
				if i == 5 && f != LibIPC {
					p = []byte{}
				}
				want = append(want, p)
				stream = append(stream, enc(t, f, uint8(i), p)...)
			}
			// Half in one write, the rest in pieces of 1, 2, 3... bytes.
			half := len(stream) / 2
			go func() {
				unix.Write(peer, stream[:half])
				rest := stream[half:]
				for n := 1; len(rest) > 0; n = n%97 + 1 {
					k := min(n, len(rest))
					unix.Write(peer, rest[:k])
					rest = rest[k:]
				}
			}()
			for i, w := range want {
				ev := expect(t, ctx, l, MessageRx, id)
				if !bytes.Equal(ev.Data, w) {
					t.Fatalf("message %d: %d bytes, want %d", i, len(ev.Data), len(w))
				}
				if f == LibIPCC && ev.UserType != uint8(i) {
					t.Fatalf("message %d: user type %d", i, ev.UserType)
				}
			}
		})
	}
}

// Schedule is FIFO per connection, MessageTx follows Schedule order, and
// a Write after scheduled messages leaves after them.
func TestScheduleOrder(t *testing.T) {
	ctx := checked(t)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			l := newTestLoop(t, WithQueueLimit(4096, 1<<20))
			id, peer := pair(t, l, f)
			const n = 2000
			got := make(chan error, 1)
			go func() {
				for i := 0; i <= n; i++ {
					p, _ := readFrame(t, peer, f)
					if want := fmt.Sprintf("m%05d", i); string(p) != want {
						got <- fmt.Errorf("frame %d: %q, want %q", i, p, want)
						return
					}
				}
				got <- nil
			}()
			// The peer reads slowly at first: the queue fills past the
			// socket buffer and is written later by the Loop.
			for i := 0; i < n; i++ {
				if err := l.Schedule(id, []byte(fmt.Sprintf("m%05d", i))); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- l.Write(id, []byte(fmt.Sprintf("m%05d", n))) }()
			for i := 0; i < n; i++ {
				ev := expect(t, ctx, l, MessageTx, id)
				if ev.Err != nil {
					t.Fatal(ev.Err)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Writers on many goroutines never interleave their frames.
func TestConcurrentWriters(t *testing.T) {
	checked(t)
	l := newTestLoop(t)
	id, peer := pair(t, l, PktLine)
	const writers, each = 8, 200
	// The application's loop: it writes what Schedule left queued.
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			if _, err := l.WaitEvent(context.Background()); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { l.Close(); <-loopDone })
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte('a' + w)}, 70000) // two packets each
			for i := 0; i < each; i++ {
				var err error
				if i%2 == 0 {
					err = l.Write(id, p)
				} else {
					err = l.Schedule(id, p)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < writers*each; i++ {
		p, _ := readFrame(t, peer, PktLine)
		if len(p) != 70000 || bytes.Count(p, p[:1]) != len(p) {
			t.Fatalf("frame %d torn: %d bytes", i, len(p))
		}
	}
	wg.Wait()
}

// One connection flooding does not hold back another: the quiet one's
// message comes within a few events of its arrival.
func TestFairness(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	flood, fpeer := pair(t, l, LibIPC)
	quietID, qpeer := pair(t, l, LibIPC)
	// 5,000 small frames buffered on the flooder before the Loop looks.
	var stream []byte
	for i := 0; i < 5000; i++ {
		stream = append(stream, enc(t, LibIPC, 0, []byte("flood"))...)
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for b := stream; len(b) > 0; {
			n, err := unix.Write(fpeer, b)
			if err != nil {
				return
			}
			b = b[n:]
		}
	}()
	t.Cleanup(func() { <-wrote })
	for i := 0; i < 10; i++ {
		expect(t, ctx, l, MessageRx, flood)
	}
	writeAll(t, qpeer, enc(t, LibIPC, 0, []byte("hello")))
	// The quiet connection's frame is in its socket now; the Loop learns
	// of it at its next epoll look, which it takes when its queue runs
	// dry or within the flooder's turns.
	for n := 0; ; n++ {
		ev := next(t, ctx, l)
		if ev.Conn == quietID {
			if string(ev.Data) != "hello" {
				t.Fatalf("got %q", ev.Data)
			}
			t.Logf("quiet connection served after %d flood events", n)
			if n > maxUnfair {
				t.Fatalf("quiet connection waited %d events", n)
			}
			return
		}
		if ev.Conn != flood {
			t.Fatalf("unexpected %v on %d", ev.Kind, ev.Conn)
		}
	}
}

// maxUnfair bounds how many events another connection may get before a
// newly readable one is served: a few of the Loop's looks at epoll.
const maxUnfair = 4 * pollEvery

// TestLibIPCLockNotThroughRunDirLink: a run directory that is a symlink
// (another user planted /tmp/.libipc-run pointing where they like) is
// refused before the lock file is made: nothing is created in the link's
// target. Before, the lock was made first, through the link.
func TestLibIPCLockNotThroughRunDirLink(t *testing.T) {
	checked(t)
	base := t.TempDir()
	target := filepath.Join(base, "chosen")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "run")
	if err := os.Symlink(target, dir); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RUNDIR", dir)
	l := newTestLoop(t, WithLayout(LibIPCLayout))
	if _, err := l.Listen("pong", LibIPC); err == nil {
		t.Fatal("Listen in a symlinked run directory succeeded")
	}
	if entries, err := os.ReadDir(target); err != nil || len(entries) != 0 {
		t.Fatalf("the link's target holds %v (%v), want nothing", entries, err)
	}
}

// TestLibIPCLockNotInOthersRunDir: a run directory that belongs to another
// user (and not root) is refused before the lock file is made in it.
func TestLibIPCLockNotInOthersRunDir(t *testing.T) {
	checked(t)
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 54321, 54321); err != nil {
		t.Skipf("cannot give the directory to another user: %v", err)
	}
	t.Setenv("RUNDIR", dir)
	l := newTestLoop(t, WithLayout(LibIPCLayout))
	if _, err := l.Listen("pong", LibIPC); !errors.Is(err, uds.ErrInsecureDir) {
		t.Fatalf("Listen in another user's run directory: %v, want uds.ErrInsecureDir", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "pong.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the lock file: %v, want it never made", err)
	}
}
