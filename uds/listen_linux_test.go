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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

func TestListenLifecycle(t *testing.T) {
	leakcheck.Check(t)
	dir := filepath.Join(tempDir(t), "run") // missing: Listen creates it
	path := filepath.Join(dir, "ipc")
	l := listen(t, path)

	if st := lstat(t, dir); st.Mode&0o7777 != 0o700 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("created directory mode %o, want dir 0700", st.Mode)
	}
	st := lstat(t, path)
	if !isSock(&st) || st.Mode&0o7777 != 0o600 {
		t.Errorf("socket mode %o, want socket 0600", st.Mode)
	}
	if !exists(path + LockSuffix) {
		t.Errorf("lock file %s missing while listening", path+LockSuffix)
	}
	if exists(path + ".lock") {
		t.Errorf("git's lock name %s.lock was created", path)
	}
	if l.Path() != path || l.Addr().String() != path || l.Addr().Network() != "unix" {
		t.Errorf("Path %q Addr %v, want %q", l.Path(), l.Addr(), path)
	}

	exchangeOnce(t, l, path)
	// State's probe is a connection too (git's is-active): done after the
	// exchange so the accept above got the Dial's connection.
	if got := State(path); got != Listening {
		t.Errorf("State = %v, want listening", got)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if exists(path) || exists(path+LockSuffix) {
		t.Errorf("Close left the socket (%v) or the lock file (%v)", exists(path), exists(path+LockSuffix))
	}
	if got := State(path); got != NotListening {
		t.Errorf("State after Close = %v, want not listening", got)
	}
	if _, _, err := l.AcceptUnix(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("AcceptUnix after Close: %v, want net.ErrClosed", err)
	}
	select {
	case <-l.Stolen():
		t.Error("Close closed Stolen")
	default:
	}
}

// exchangeOnce dials path, accepts on l, checks both sides' credentials
// and sends one message across.
func exchangeOnce(t *testing.T, l *Listener, path string) {
	t.Helper()
	type accepted struct {
		c    *net.UnixConn
		cred Cred
		err  error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, cred, err := l.AcceptUnix()
		ch <- accepted{c, cred, err}
	}()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		t.Fatal(a.err)
	}
	want := Cred{PID: int32(os.Getpid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	if a.cred != want {
		t.Errorf("accepted cred %+v, want %+v", a.cred, want)
	}
	if srv, err := PeerCred(c); err != nil || srv != want {
		t.Errorf("client's PeerCred = %+v, %v; want %+v", srv, err, want)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(a.c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	c.Close()
	a.c.Close()
}

// The socket and directory modes are in place regardless of the process
// umask, and widened through a handle when the umask would strip bits.
func TestListenModesIgnoreUmask(t *testing.T) {
	leakcheck.Check(t)
	for _, tc := range []struct {
		umask          int
		opts           []Option
		sock, dirMode  uint32
		wantDirCreated bool
	}{
		{umask: 0, sock: 0o600, dirMode: 0o700},
		{umask: 0o022, sock: 0o600, dirMode: 0o700},
		{umask: 0o077, opts: []Option{WithMode(0o660), WithDirMode(0o750)}, sock: 0o660, dirMode: 0o750},
		{umask: 0o077, opts: []Option{WithMode(0o666)}, sock: 0o666, dirMode: 0o755},
		{umask: 0o277, opts: []Option{WithMode(0o660)}, sock: 0o660, dirMode: 0o750},
	} {
		t.Run(fmt.Sprintf("umask=%03o/mode=%03o", tc.umask, tc.sock), func(t *testing.T) {
			dir := filepath.Join(tempDir(t), "sub")
			path := filepath.Join(dir, "s")
			old := unix.Umask(tc.umask)
			l, err := Listen(path, tc.opts...)
			unix.Umask(old)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if st := lstat(t, path); st.Mode&0o7777 != tc.sock {
				t.Errorf("socket mode %04o, want %04o", st.Mode&0o7777, tc.sock)
			}
			if st := lstat(t, dir); st.Mode&0o7777 != tc.dirMode {
				t.Errorf("directory mode %04o, want %04o", st.Mode&0o7777, tc.dirMode)
			}
		})
	}
}

// Abstract names: a policy is required, a taken name gives its owner, all
// 107 bytes can be used, and there is nothing to steal.
func TestAbstract(t *testing.T) {
	leakcheck.Check(t)
	name := fmt.Sprintf("@pktipc-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	if _, err := Listen(name, WithAbstract()); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("abstract Listen without a policy: %v, want ErrInvalidOption", err)
	}
	l := listen(t, name, WithAbstract(), WithPolicy(SameUser()))
	serve(t, l)
	if l.Addr().String() != name {
		t.Errorf("Addr = %v, want %s", l.Addr(), name)
	}
	c, err := Dial(context.Background(), name, DialAbstract())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	_, err = Listen(name, WithAbstract(), WithPolicy(SameUser()))
	var iu *InUseError
	if !errors.As(err, &iu) || iu.Owner == nil || iu.Owner.UID != uint32(os.Geteuid()) || iu.Owner.PID != int32(os.Getpid()) {
		t.Fatalf("second abstract Listen: %v, want *InUseError naming our uid and pid", err)
	}

	full := "@" + strings.Repeat("a", MaxPathLen-(len(name)-1)) + name[1:]
	if len(full) != MaxPathLen+1 {
		t.Fatalf("test bug: abstract name of %d bytes", len(full)-1)
	}
	l2 := listen(t, full, WithAbstract(), WithPolicy(AllowAll()))
	serve(t, l2)
	c, err = Dial(context.Background(), full, DialAbstract())
	if err != nil {
		t.Fatalf("Dial of a 107-byte abstract name: %v", err)
	}
	c.Close()
	l2.Close()
	if _, err := Listen(full+"x", WithAbstract(), WithPolicy(AllowAll())); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("108-byte abstract name: %v, want ENAMETOOLONG", err)
	}
	select {
	case <-l.Stolen():
		t.Error("abstract listener reported theft")
	default:
	}
}

func TestRelativePaths(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	t.Chdir(dir)
	for _, name := range []string{"rel.sock", "@looks-abstract"} {
		l := listen(t, name)
		serve(t, l)
		if !exists(filepath.Join(dir, name)) {
			t.Fatalf("%s: no socket file in the working directory", name)
		}
		if State(name) != Listening {
			t.Errorf("%s: State not listening", name)
		}
		c, err := Dial(context.Background(), name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c.Close()
		l.Close()
	}
}

// Every descriptor uds opens is close-on-exec.
func TestCloseOnExec(t *testing.T) {
	leakcheck.Check(t)
	before := fdSet(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path)
	c, s := connectPair(t, l, path)
	defer c.Close()
	defer s.Close()
	n := 0
	for fd := range fdSet(t) {
		if before[fd] {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			continue // closed meanwhile
		}
		n++
		if flags&unix.FD_CLOEXEC == 0 {
			target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
			t.Errorf("fd %d (%s) is not close-on-exec", fd, target)
		}
	}
	if n < 5 { // listener, directory, lock, two connections
		for fd := range fdSet(t) {
			target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
			t.Logf("fd %d: %s (before: %v)", fd, target, before[fd])
		}
		t.Errorf("only %d new descriptors seen", n)
	}
}

func fdSet(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	m := map[int]bool{}
	for _, e := range ents {
		var fd int
		fmt.Sscan(e.Name(), &fd)
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || strings.HasSuffix(target, "/fd") {
			continue // the descriptor ReadDir itself used
		}
		m[fd] = true
	}
	return m
}
