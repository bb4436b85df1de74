//go:build linux

package uds

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// acceptAll runs AcceptUnix until the listener closes and reports every
// connection it returned (none are expected in the denial tests).
func acceptAll(t *testing.T, l *Listener) (returned func() int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, _, err := l.AcceptUnix()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// unreadAtClose makes denied connections report, just before they are
// closed, how many request bytes are still queued unread in the kernel. It
// waits (up to 5 s) for the peer's bytes to arrive, so the count proves
// they were never read.
func unreadAtClose(t *testing.T) <-chan int {
	t.Helper()
	ch := make(chan int, 8)
	swap(t, &closeDenied, func(c *net.UnixConn) error {
		rc, err := c.SyscallConn()
		if err == nil {
			deadline := time.Now().Add(5 * time.Second)
			for {
				var n int
				rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
				if n > 0 || time.Now().After(deadline) {
					ch <- n
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		return c.Close()
	})
	return ch
}

// A connection from another uid is refused before any byte is read and
// counted; the peer gets no reply. Both on a filesystem socket the other
// uid may reach, and on an abstract name (which has no permissions at all).
func TestOtherUIDRefusedBeforeRead(t *testing.T) {
	requireRoot(t)
	leakcheck.Check(t)
	bin := nobodyBinary(t)
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprint("abstract=", abstract), func(t *testing.T) {
			var l *Listener
			var path, opt string
			if abstract {
				path = fmt.Sprintf("@pktipc-test-nobody-%d-%d", os.Getpid(), time.Now().UnixNano())
				l = listen(t, path, WithAbstract(), WithPolicy(SameUser()))
				opt = "abstract"
			} else {
				top := tempDir(t)
				os.Chmod(top, 0o711) // test setup: let uid 65534 traverse
				path = filepath.Join(top, "pub", "s")
				l = listen(t, path, WithMode(0o666), WithDirMode(0o711))
			}
			unread := unreadAtClose(t)
			returned := acceptAll(t, l)
			out := child{mode: "peer", path: path, opt: opt, asNobody: true, bin: bin}.run(t)
			if out != "write ok read reset" && out != "write ok read eof" {
				t.Errorf("uid 65534 peer saw %q, want its write accepted and then EOF or reset without data", out)
			}
			if n := <-unread; n != len("0009hello0000") {
				t.Errorf("%d bytes unread when the denied connection was closed, want all %d", n, len("0009hello0000"))
			}
			for deadline := time.Now().Add(5 * time.Second); l.Denied() == 0 && time.Now().Before(deadline); {
				time.Sleep(2 * time.Millisecond) // counted just after the close
			}
			if l.Denied() != 1 {
				t.Errorf("Denied() = %d, want 1", l.Denied())
			}
			l.Close()
			if returned() != 0 {
				t.Error("AcceptUnix returned the denied connection")
			}
		})
	}
}

// File permissions alone keep another uid out.
func TestOtherUIDGetsEACCES(t *testing.T) {
	requireRoot(t)
	leakcheck.Check(t)
	bin := nobodyBinary(t)
	top := tempDir(t)
	os.Chmod(top, 0o711)

	// Default 0600 socket in a 0700 directory: the directory stops them.
	private := filepath.Join(top, "private", "s")
	l := listen(t, private)
	returned := acceptAll(t, l)
	if out := (child{mode: "peer", path: private, asNobody: true, bin: bin}).run(t); out != "dial EACCES" {
		t.Errorf("peer on a private socket: %q, want dial EACCES", out)
	}
	if out := (child{mode: "state", path: private, asNobody: true, bin: bin}).run(t); out != InvalidPath.String() {
		t.Errorf("State from uid 65534: %q, want %q (lstat fails with EACCES)", out, InvalidPath)
	}

	// A 0600 socket in a directory they may enter: the socket mode stops them.
	open := filepath.Join(top, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o711)
	sock := filepath.Join(open, "s")
	l2 := listen(t, sock, WithInsecureDir())
	returned2 := acceptAll(t, l2)
	if out := (child{mode: "peer", path: sock, asNobody: true, bin: bin}).run(t); out != "dial EACCES" {
		t.Errorf("peer on a 0600 socket: %q, want dial EACCES", out)
	}
	if out := (child{mode: "state", path: sock, asNobody: true, bin: bin}).run(t); out != OtherError.String() {
		t.Errorf("State from uid 65534: %q, want %q (connect fails with EACCES)", out, OtherError)
	}
	l.Close()
	l2.Close()
	if returned() != 0 || returned2() != 0 || l.Denied() != 0 || l2.Denied() != 0 {
		t.Error("a connection got through to the listener")
	}
}

// The built-in policies, applied at accept to a peer in this process.
func TestPolicyDeniesAtAccept(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	for _, tc := range []struct {
		name   string
		policy Policy
		admit  bool
	}{
		{"same user", SameUser(), true},
		{"root only", RootOnly(), os.Geteuid() == 0},
		{"uid listed", AllowUIDs(uint32(os.Geteuid())), true},
		{"uid not listed", AllowUIDs(4242), false},
		{"gid listed", AllowGIDs(uint32(os.Getegid())), true},
		{"gid not listed", AllowGIDs(4242), false},
		{"all", AllowAll(), true},
		{"nil func", PolicyFunc(nil), false},
		{"func", PolicyFunc(func(c Cred) error {
			if c.PID != int32(os.Getpid()) {
				return ErrDenied
			}
			return nil
		}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "s")
			l := listen(t, path, WithPolicy(tc.policy))
			returned := acceptAll(t, l)
			c, err := Dial(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			deadline := time.Now().Add(5 * time.Second)
			for uint64(returned())+l.Denied() == 0 && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
			}
			l.Close()
			wantDenied := uint64(1)
			if tc.admit {
				wantDenied = 0
			}
			if l.Denied() != wantDenied || returned() != int(1-wantDenied) {
				t.Errorf("Denied %d, returned %d; want admitted=%v", l.Denied(), returned(), tc.admit)
			}
			if !tc.admit {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("denied peer read: %v, want EOF", err)
				}
			}
		})
	}
}

// When credentials cannot be read, the peer is denied.
func TestPeerCredFailureDenies(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path, WithPolicy(AllowAll()))
	var failing sync.Mutex // guards fail
	fail := true
	swap(t, &getPeerCred, func(fd int) (unix.Ucred, error) {
		failing.Lock()
		defer failing.Unlock()
		if fail {
			return unix.Ucred{}, syscall.ENOTCONN
		}
		uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return unix.Ucred{}, err
		}
		return *uc, nil
	})
	returned := acceptAll(t, l)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer of a denied connection read: %v, want EOF", err)
	}
	c.Close()
	// The count follows the close the peer has just seen.
	for deadline := time.Now().Add(5 * time.Second); l.Denied() == 0 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	if l.Denied() != 1 {
		t.Errorf("Denied() = %d, want 1", l.Denied())
	}
	failing.Lock()
	fail = false
	failing.Unlock()
	c, err = Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for returned() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if returned() != 1 {
		t.Error("connection not admitted once credentials could be read")
	}
}
