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
	"slices"
	"strings"
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
			waitTheftEvent(t, l)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A path through symbolic links is watched along the links: replacing
// either link of a chain is noticed through an event, with the timer at its
// slowest.
func TestTheftThroughSymlinks(t *testing.T) {
	leakcheck.Check(t)
	for _, link := range []string{"link", filepath.Join("b", "link2")} {
		t.Run(filepath.Base(link), func(t *testing.T) {
			top := tempDir(t)
			for _, d := range []string{"real/d", "b", "other"} {
				if err := os.MkdirAll(filepath.Join(top, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			// top/link -> b/link2 -> ../real
			if err := os.Symlink("../real", filepath.Join(top, "b", "link2")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("b/link2", filepath.Join(top, "link")); err != nil {
				t.Fatal(err)
			}
			l := listen(t, filepath.Join(top, "link", "d", "s"), WithWatchInterval(MaxWatchInterval))
			if !localFS(top) {
				t.Skipf("%s is not on a filesystem whose changes inotify sees", top)
			}
			if !l.evented {
				t.Fatal("the watch does not cover a path through links")
			}
			// Point the link elsewhere, atomically: the path names nothing.
			at := filepath.Join(top, link)
			if err := os.Symlink(filepath.Join(top, "other"), at+".new"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(at+".new", at); err != nil {
				t.Fatal(err)
			}
			waitTheftEvent(t, l)
		})
	}
}

// A mount over the socket's directory hides the socket: the mount table's
// change starts the check. A helper does it in a mount namespace of its
// own, so nothing stays mounted whatever happens; it needs root.
func TestTheftByMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a mount namespace")
	}
	top := tempDir(t)
	if !localFS(top) {
		t.Skipf("%s is not on a filesystem whose changes inotify sees", top)
	}
	dir := filepath.Join(top, "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := child{mode: "mount", path: filepath.Join(dir, "s"), ownMounts: true}.command(ctx).CombinedOutput()
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("no mount namespace here: %v", err)
	}
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	switch line := strings.TrimSpace(string(out)); {
	case strings.HasPrefix(line, "nomount"):
		t.Skipf("cannot mount here: %s", line)
	case line == "stolen 0":
		t.Error("the mount was noticed by the timer, not by the mount table's event")
	case !strings.HasPrefix(line, "stolen "):
		t.Errorf("helper: %s", line)
	}
}

// Where events cover the path, an idle listener's watch does not wake on
// a timer: the default interval's ticks would come each second.
func TestIdleWatchSleeps(t *testing.T) {
	leakcheck.Check(t)
	top := tempDir(t)
	if !localFS(top) {
		t.Skipf("%s is not on a filesystem whose changes inotify sees", top)
	}
	l := listen(t, filepath.Join(top, "s"))
	if !l.evented {
		t.Fatal("the watch of a path on a local filesystem is not complete")
	}
	time.Sleep(DefaultWatchInterval * 3 / 2)
	if n := l.ticks.Load(); n != 0 {
		t.Fatalf("%d timer checks in %v", n, DefaultWatchInterval*3/2)
	}
	select {
	case <-l.Stolen():
		t.Fatalf("stolen: %v", l.StolenErr())
	default:
	}
}

// resolvePath follows links as the kernel does.
func TestResolvePath(t *testing.T) {
	top, err := filepath.EvalSymlinks(tempDir(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"real/d", "b"} {
		if err := os.MkdirAll(filepath.Join(top, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mustLink := func(target, at string) {
		if err := os.Symlink(target, filepath.Join(top, at)); err != nil {
			t.Fatal(err)
		}
	}
	mustLink("../real", "b/link2")
	mustLink("b/link2", "link")
	mustLink(filepath.Join(top, "real"), "abs")
	mustLink("loop", "loop")
	for _, tc := range []struct {
		path, want string
		links      []dirEntry
	}{
		{"real/d/s", "real/d/s", nil},
		{"link/d/s", "real/d/s", []dirEntry{{top, "link"}, {top + "/b", "link2"}}},
		{"abs/./d/../d/s", "real/d/s", []dirEntry{{top, "abs"}}},
		{"b/link2/s", "real/s", []dirEntry{{top + "/b", "link2"}}},
		{"real/d/link", "real/d/link", nil}, // the last name is not followed
	} {
		got, links, err := resolvePath(filepath.Join(top, tc.path))
		if err != nil || got != filepath.Join(top, tc.want) || !slices.Equal(links, tc.links) {
			t.Errorf("resolvePath(%s) = %s, %v, %v; want %s, %v", tc.path, got, links, err, tc.want, tc.links)
		}
	}
	if _, _, err := resolvePath(filepath.Join(top, "loop", "s")); !errors.Is(err, unix.ELOOP) {
		t.Errorf("a loop of links: %v, want ELOOP", err)
	}
	if _, _, err := resolvePath(filepath.Join(top, "missing", "s")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing directory: %v, want ErrNotExist", err)
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
		{"a link replaced", event(3, unix.IN_MOVED_TO, "run"), true},
		{"a link's neighbour", event(3, unix.IN_CREATE, "lock"), false},
		{"a link's directory moved", event(3, unix.IN_MOVE_SELF, ""), true},
		{"our name in a link's directory", event(3, unix.IN_DELETE, "s"), false},
	} {
		names := map[int32][]string{1: {"s"}, 3: {"run", "var"}}
		if got := concernsPath(tc.buf, names); got != tc.want {
			t.Errorf("%s: concernsPath = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// waitTheftEvent waits for l to report its path stolen and checks that an
// inotify event, not the timer, noticed it: events cover the path (so the
// timer is the slow sweep), and the timer has not fired.
func waitTheftEvent(t *testing.T, l *Listener) {
	t.Helper()
	if !l.evented {
		t.Fatal("inotify does not cover the path: only the timer would notice a theft")
	}
	select {
	case <-l.Stolen():
	case <-time.After(5 * time.Second):
		t.Fatal("theft not noticed")
	}
	if n := l.ticks.Load(); n != 0 {
		t.Errorf("the timer fired %d times before the theft was noticed", n)
	}
}
