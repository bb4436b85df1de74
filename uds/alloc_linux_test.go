//go:build !race

package uds

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Accepting a connection allocates nothing, credentials and policy
// included: a git-style client makes a connection per request.
func TestAcceptFDDoesNotAllocate(t *testing.T) {
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path)
	sa := &unix.SockaddrUnix{Name: path}
	accept := func() {
		c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(c)
		if err := unix.Connect(c, sa); err != nil {
			t.Fatal(err)
		}
		fd, _, err := l.AcceptFD()
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	for range 10 { // the duplicate of the listener is made once
		accept()
	}
	if n := testing.AllocsPerRun(200, accept); n != 0 {
		t.Errorf("%v allocations per accepted connection, want 0", n)
	}
}
