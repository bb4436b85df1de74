//go:build linux

package uds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// SO_PASSRIGHTS is off on the listener and accepted connections by default
// (Linux 6.16+), so SCM_RIGHTS sent to them fails; WithPassRights(true)
// leaves it on.
func TestPassRights(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	for _, pass := range []bool{false, true} {
		path := filepath.Join(dir, fmt.Sprint("s", pass))
		l := listen(t, path, WithPassRights(pass))
		c, s := connectPair(t, l, path)
		var v int
		var gerr error
		rc, _ := s.SyscallConn()
		rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSRIGHTS) })
		if gerr == unix.ENOPROTOOPT {
			c.Close()
			s.Close()
			t.Skip("kernel without SO_PASSRIGHTS (before 6.16)")
		}
		if gerr != nil || (v != 0) != pass {
			t.Errorf("pass=%v: SO_PASSRIGHTS = %d, %v", pass, v, gerr)
		}
		_, _, serr := c.WriteMsgUnix([]byte("x"), unix.UnixRights(int(os.Stdin.Fd())), nil)
		if pass && serr != nil {
			t.Errorf("pass=true: sending a descriptor failed: %v", serr)
		}
		if !pass && serr == nil {
			t.Error("pass=false: sending a descriptor succeeded")
		}
		if pass {
			// Receive (and close) the descriptor so nothing leaks.
			oob := make([]byte, unix.CmsgSpace(4))
			_, oobn, _, _, err := s.ReadMsgUnix(make([]byte, 1), oob)
			if err == nil {
				if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
					if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil {
						for _, fd := range fds {
							unix.Close(fd)
						}
					}
				}
			}
		}
		c.Close()
		s.Close()
		l.Close()
	}
}

// SO_PASSRIGHTS: kernels without it (ENOPROTOOPT) are fine; any other
// failure to switch it off denies the connection (fail closed).
func TestPassRightsFailure(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	var mu sync.Mutex // guards errno
	errno := syscall.ENOPROTOOPT
	swap(t, &setPassRights, func(int, bool) error {
		mu.Lock()
		defer mu.Unlock()
		return errno
	})
	path := filepath.Join(dir, "s")
	l := listen(t, path)
	returned := acceptAll(t, l)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for uint64(returned())+l.Denied() < 1 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	errno = syscall.EPERM
	mu.Unlock()
	c, err = Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for uint64(returned())+l.Denied() < 2 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if returned() != 1 || l.Denied() != 1 {
		t.Errorf("returned %d, denied %d; want the ENOPROTOOPT one admitted and the EPERM one denied", returned(), l.Denied())
	}
	if l2, err := Listen(filepath.Join(dir, "t")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("Listen when SO_PASSRIGHTS fails: %v, want EPERM", err)
		if err == nil {
			l2.Close()
		}
	}
	if exists(filepath.Join(dir, "t")) || exists(filepath.Join(dir, "t"+LockSuffix)) {
		ents, _ := os.ReadDir(dir)
		t.Errorf("failed Listen left files: %v", ents)
	}
}
