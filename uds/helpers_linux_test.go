//go:build linux

package uds

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// tempDir makes a short private (0700) directory, removed at cleanup.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// listen calls Listen and closes the listener at cleanup.
func listen(t *testing.T, path string, opts ...Option) *Listener {
	t.Helper()
	l, err := Listen(path, opts...)
	if err != nil {
		t.Fatalf("Listen(%s): %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// serve accepts and closes connections until the listener closes; the
// goroutine is joined at cleanup (after the listener's own cleanup Close).
func serve(t *testing.T, l *Listener) {
	t.Helper()
	wait := acceptLoop(l)
	t.Cleanup(func() {
		l.Close()
		wait()
	})
}

// acceptLoop accepts and closes connections on ln until it closes; wait
// joins its goroutine.
func acceptLoop(ln net.Listener) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return wg.Wait
}

// connectPair dials path and returns the client's end with the connection
// l accepted for it.
func connectPair(t *testing.T, l *Listener, path string) (c, s *net.UnixConn) {
	t.Helper()
	ch := make(chan *net.UnixConn, 1)
	go func() {
		c, _, _ := l.AcceptUnix()
		ch <- c
	}()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s = <-ch
	if s == nil {
		c.Close()
		t.Fatal("accept failed")
	}
	return c, s
}

// deadSocket leaves a socket file nobody listens on, as a killed server does.
func deadSocket(t *testing.T, path string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	name := path
	if len(path) > MaxPathLen { // bind through the directory's handle
		d, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(d)
		name = procFD(d) + "/" + filepath.Base(path)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		t.Fatal(err)
	}
}

// plainListen binds path with the net package only (as git or another
// program would), without unlinking on close.
func plainListen(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	t.Cleanup(func() { ul.Close() })
	return ul
}

func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// longPath returns a path of exactly n bytes under dir whose last
// component is name, creating the directories on the way with mode 0700.
func longPath(t testing.TB, dir, name string, n int) string {
	t.Helper()
	p := dir
	for {
		left := n - len(p) - 1 - len(name) // bytes still to add as "/ddd" components
		if left == 0 {
			break
		}
		if left < 2 {
			t.Fatalf("cannot pad %s to %d bytes", dir, n)
		}
		seg := min(left-1, 60)
		if left-1-seg == 1 {
			seg-- // never leave a single byte: a component needs "/" plus one
		}
		p = filepath.Join(p, strings.Repeat("d", seg))
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
	}
	p = filepath.Join(p, name)
	if len(p) != n {
		t.Fatalf("longPath made %d bytes, want %d: %s", len(p), n, p)
	}
	return p
}

// swap replaces a package variable for the duration of the test.
func swap[T any](t *testing.T, v *T, with T) {
	t.Helper()
	old := *v
	*v = with
	t.Cleanup(func() { *v = old })
}
