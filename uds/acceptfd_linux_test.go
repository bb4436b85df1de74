package uds

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestAcceptFD: the descriptor is the connection (non-blocking,
// close-on-exec, SO_PASSRIGHTS off), with the peer's credentials; denied
// peers are closed and counted; Close unblocks a waiting AcceptFD.
func TestAcceptFD(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	path := filepath.Join(dir, "s")
	deny := false
	l := listen(t, path, WithPolicy(PolicyFunc(func(c Cred) error {
		if deny {
			return ErrDenied
		}
		return nil
	})))

	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fd, cred, err := l.AcceptFD()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if cred.PID != int32(os.Getpid()) || cred.UID != uint32(os.Getuid()) {
		t.Fatalf("cred %+v", cred)
	}
	fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	fdfl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if fl&unix.O_NONBLOCK == 0 || fdfl&unix.FD_CLOEXEC == 0 {
		t.Fatalf("flags %#x, fd flags %#x: want non-blocking and close-on-exec", fl, fdfl)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSRIGHTS); err == nil && v != 0 {
		t.Fatal("SO_PASSRIGHTS is on")
	}
	c.Write([]byte("hi"))
	buf := make([]byte, 2)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			time.Sleep(time.Millisecond)
			continue
		}
		if n != 2 || string(buf) != "hi" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		break
	}

	deny = true // read by AcceptFD only after the Dial below
	d, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	done := make(chan error, 1)
	go func() {
		fd, _, err := l.AcceptFD() // takes the denied one, then waits
		if err == nil {
			unix.Close(fd)
		}
		done <- err
	}()
	d.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := d.Read(buf); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a denied peer read %d bytes, %v: want its connection closed", n, err)
	}
	if l.Denied() != 1 {
		t.Fatalf("Denied = %d", l.Denied())
	}
	l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptFD after Close: %v", err)
	}
}

// TestAcceptFDWakesForEveryConnection: AcceptFD parks in the netpoller
// between connections; each of a long run of connections, made one at a
// time after gaps of every kind (none, a yield, a sleep long enough for
// the acceptor to park), is accepted without waiting for a later one.
// A lost wake-up leaves a connection in the backlog with nothing behind
// it, and the test fails at its per-connection bound instead of hanging.
func TestAcceptFDWakesForEveryConnection(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path)
	rounds := 3000
	if testing.Short() {
		rounds = 500
	}
	got := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fd, _, err := l.AcceptFD()
			if err != nil {
				got <- err
				return
			}
			unix.Close(fd)
			got <- nil
		}
	}()
	for i := range rounds {
		switch i % 4 {
		case 1:
			runtime.Gosched()
		case 2:
			time.Sleep(50 * time.Microsecond)
		case 3:
			time.Sleep(time.Millisecond)
		}
		c, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %d still in the backlog after 10 s: a lost wake-up", i)
		}
		c.Close()
	}
	l.Close()
	<-done
	if err := <-got; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptFD after Close: %v", err)
	}
	if _, _, err := l.AcceptFD(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptFD on a closed listener: %v", err)
	}
}
