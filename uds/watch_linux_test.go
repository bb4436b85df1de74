//go:build linux

package uds

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// A stolen socket is noticed within a second, under load, and Close leaves
// the thief's socket alone.
func TestTheftDetected(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path)
	serve(t, l)

	// Load: a client connecting and closing in a loop throughout.
	stop := dialLoop(path)
	defer stop()

	time.Sleep(50 * time.Millisecond)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	thief := plainListen(t, path)
	stolenAt := time.Now()
	thiefIno := lstat(t, path).Ino
	select {
	case <-l.Stolen():
		t.Logf("theft noticed after %v (watch interval %v)", time.Since(stolenAt), DefaultWatchInterval)
	case <-time.After(3 * time.Second):
		t.Fatal("theft not noticed within 3 s")
	}
	stop()
	if err := l.StolenErr(); !errors.Is(err, ErrStolen) {
		t.Errorf("StolenErr = %v, want ErrStolen", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, path); st.Ino != thiefIno {
		t.Fatal("Close removed or replaced the thief's socket")
	}
	if exists(path + LockSuffix) {
		t.Error("lock file left behind")
	}
	thiefServes(t, thief, path)
}

// dialLoop connects to path and closes, in a loop, until the returned stop
// is called; stop waits for the loop to end and may be called again.
func dialLoop(path string) (stop func()) {
	stopLoad := make(chan struct{})
	var loadWG sync.WaitGroup
	loadWG.Add(1)
	go func() {
		defer loadWG.Done()
		for {
			select {
			case <-stopLoad:
				return
			default:
			}
			if c, err := Dial(context.Background(), path); err == nil {
				c.Close()
			}
		}
	}()
	var stopOnce sync.Once
	return func() {
		stopOnce.Do(func() {
			close(stopLoad)
			loadWG.Wait()
		})
	}
}

// thiefServes checks that the thief's socket at path still serves.
func thiefServes(t *testing.T, thief *net.UnixListener, path string) {
	t.Helper()
	// The thief still serves (its backlog may be full of the load's
	// connections: drain them).
	drained := acceptLoop(thief)
	defer func() {
		thief.Close()
		drained()
	}()
	c, err := Dial(context.Background(), path, WaitIfBusy())
	if err != nil {
		t.Fatalf("thief unreachable: %v", err)
	}
	c.Close()
}

// Deletion, and renaming the directory, count as theft; Close then removes
// our own socket wherever its directory went.
func TestTheftDeletedOrMoved(t *testing.T) {
	leakcheck.Check(t)
	t.Run("deleted", func(t *testing.T) {
		path := filepath.Join(tempDir(t), "s")
		l := listen(t, path, WithWatchInterval(20*time.Millisecond))
		os.Remove(path)
		select {
		case <-l.Stolen():
		case <-time.After(3 * time.Second):
			t.Fatal("deletion not noticed")
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("directory renamed", func(t *testing.T) {
		top := tempDir(t)
		dir := filepath.Join(top, "d")
		l := listen(t, filepath.Join(dir, "s"), WithWatchInterval(20*time.Millisecond))
		moved := filepath.Join(top, "moved")
		if err := os.Rename(dir, moved); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.Stolen():
		case <-time.After(3 * time.Second):
			t.Fatal("rename not noticed")
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if names, _ := os.ReadDir(moved); len(names) != 0 {
			t.Errorf("our socket or lock file left in the moved directory: %v", names)
		}
	})
}

// Theft is also checked on accept errors, which keep their errno.
func TestStolenCheckedOnAcceptError(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path, WithWatchInterval(MaxWatchInterval))
	swap(t, &acceptUnix, func(*net.UnixListener) (*net.UnixConn, error) {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	})
	os.Remove(path)
	plainListen(t, path)
	_, _, err := l.AcceptUnix()
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("AcceptUnix: %v, want EMFILE", err)
	}
	select {
	case <-l.Stolen():
	default:
		t.Fatal("accept error did not trigger the theft check")
	}
}

// Inotify starts the check at once: with the timer at its slowest, a
// theft by unlink and bind, a rename of the socket's directory and one of
// the directory above it are each noticed through an inotify event.
func TestTheftNoticedByInotify(t *testing.T) {
	leakcheck.Check(t)
	cases := []struct {
		name  string
		steal func(t *testing.T, top, dir, path string)
	}{
		{"replaced", func(t *testing.T, _, _, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			thief := plainListen(t, path)
			t.Cleanup(func() { thief.Close() })
		}},
		{"directory renamed", func(t *testing.T, top, dir, _ string) {
			if err := os.Rename(dir, filepath.Join(top, "moved")); err != nil {
				t.Fatal(err)
			}
		}},
		{"parent renamed", func(t *testing.T, top, _, _ string) {
			if err := os.Rename(filepath.Join(top, "p"), filepath.Join(top, "q")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			top := tempDir(t)
			dir := filepath.Join(top, "p", "d")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "s")
			l := listen(t, path, WithWatchInterval(MaxWatchInterval))
			// Other names in the directory start no check.
			for i := range 20 {
				other := filepath.Join(dir, "other")
				if err := os.WriteFile(other, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					os.Remove(other)
				}
			}
			tc.steal(t, top, dir, path)
			select {
			case <-l.Stolen():
			case <-time.After(5 * time.Second):
				t.Fatal("theft not noticed")
			}
			if l.notified.Load() == 0 {
				t.Error("the theft was noticed by the timer, not by an inotify event")
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// concernsPath picks the events that can change what the path names.
func TestConcernsPath(t *testing.T) {
	event := func(wd int32, mask uint32, name string) []byte {
		n := 0
		if name != "" {
			n = (len(name) + 1 + 15) &^ 15 // NUL-padded, as the kernel does
		}
		b := make([]byte, unix.SizeofInotifyEvent+n)
		binary.NativeEndian.PutUint32(b[0:], uint32(wd))
		binary.NativeEndian.PutUint32(b[4:], mask)
		binary.NativeEndian.PutUint32(b[12:], uint32(n))
		copy(b[unix.SizeofInotifyEvent:], name)
		return b
	}
	join := func(evs ...[]byte) []byte { return bytes.Join(evs, nil) }
	for _, tc := range []struct {
		name string
		buf  []byte
		want bool
	}{
		{"other name", event(1, unix.IN_CREATE, "index.lock"), false},
		{"other names", join(event(1, unix.IN_CREATE, "a"), event(1, unix.IN_DELETE, "b")), false},
		{"our name deleted", event(1, unix.IN_DELETE, "s"), true},
		{"our name after others", join(event(1, unix.IN_CREATE, "a"), event(1, unix.IN_MOVED_TO, "s")), true},
		{"a longer name", event(1, unix.IN_DELETE, "ss"), false},
		{"directory moved", event(1, unix.IN_MOVE_SELF, ""), true},
		{"watch removed", event(1, unix.IN_IGNORED, ""), true},
		{"a directory above", event(2, unix.IN_MOVE_SELF, ""), true},
		{"overflow", event(-1, unix.IN_Q_OVERFLOW, ""), true},
		{"cut short", event(1, unix.IN_CREATE, "abcdef")[:unix.SizeofInotifyEvent+2], true},
		{"empty", nil, false},
	} {
		if got := concernsPath(tc.buf, 1, "s"); got != tc.want {
			t.Errorf("%s: concernsPath = %v, want %v", tc.name, got, tc.want)
		}
	}
}
