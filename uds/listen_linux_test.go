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
	"sync"
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

func TestListenInUse(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)

	t.Run("pktipc", func(t *testing.T) {
		path := filepath.Join(dir, "a")
		l := listen(t, path)
		ino := lstat(t, path).Ino
		_, err := Listen(path)
		var iu *InUseError
		if !errors.As(err, &iu) || !errors.Is(err, ErrInUse) {
			t.Fatalf("second Listen: %v, want *InUseError", err)
		}
		if iu.Owner == nil || iu.Owner.PID != int32(os.Getpid()) {
			t.Errorf("owner %+v, want our pid", iu.Owner)
		}
		if st := lstat(t, path); st.Ino != ino {
			t.Error("second Listen replaced the socket")
		}
		if State(path) != Listening {
			t.Error("first listener no longer reachable")
		}
		l.Close()
	})

	t.Run("foreign server", func(t *testing.T) {
		// A server that does not use our lock (git's) is found by the probe,
		// which also names its owner.
		path := filepath.Join(dir, "b")
		plainListen(t, path)
		ino := lstat(t, path).Ino
		_, err := Listen(path)
		var iu *InUseError
		if !errors.As(err, &iu) {
			t.Fatalf("Listen over a live server: %v, want *InUseError", err)
		}
		if iu.Owner == nil || iu.Owner.UID != uint32(os.Geteuid()) || iu.Owner.PID != int32(os.Getpid()) {
			t.Errorf("owner %+v, want our uid and pid", iu.Owner)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("uid %d", os.Geteuid())) {
			t.Errorf("message does not name the owner's uid: %v", err)
		}
		if st := lstat(t, path); st.Ino != ino {
			t.Error("Listen touched a live server's socket")
		}
		if exists(path + LockSuffix) {
			t.Error("lock file left behind after a failed Listen")
		}
	})
}

// faults.md D4.
func TestListenReplacesStaleSocket(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	deadSocket(t, path)
	if State(path) != NotListening {
		t.Fatal("dead socket is not 'not listening'")
	}
	// (The inode number may be reused for the new socket: ext4 does.)
	l := listen(t, path)
	serve(t, l)
	if State(path) != Listening {
		t.Error("new listener not reachable")
	}
}

// faults.md D5: a non-socket is never unlinked.
func TestListenNeverUnlinksNonSocket(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	live := filepath.Join(dir, "live")
	ll := listen(t, live)
	serve(t, ll)
	cases := []struct {
		name string
		make func(p string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("precious"), 0o600) }},
		{"empty file", func(p string) error { return os.WriteFile(p, nil, 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"dangling symlink", func(p string) error { return os.Symlink(filepath.Join(dir, "nowhere"), p) }},
		{"symlink to live socket", func(p string) error { return os.Symlink(live, p) }},
		{"fifo", func(p string) error { return unix.Mkfifo(p, 0o600) }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint("n", i))
			if err := tc.make(path); err != nil {
				t.Fatal(err)
			}
			before := lstat(t, path)
			_, err := Listen(path)
			if !errors.Is(err, ErrNotSocket) {
				t.Fatalf("Listen: %v, want ErrNotSocket", err)
			}
			after := lstat(t, path)
			if after.Ino != before.Ino || after.Mode != before.Mode || after.Size != before.Size {
				t.Errorf("path changed: %+v -> %+v", before, after)
			}
			if tc.name == "regular file" {
				if b, _ := os.ReadFile(path); string(b) != "precious" {
					t.Errorf("content changed to %q", b)
				}
			}
			if exists(path + LockSuffix) {
				t.Error("lock file left behind")
			}
			if State(path) != InvalidPath {
				t.Errorf("State = %v, want invalid path (git's answer)", State(path))
			}
		})
	}
	if State(live) != Listening {
		t.Error("the symlink's target socket was disturbed")
	}
}

// faults.md D7: a lock file left by a crash does not block; one held by a
// live starter gives "in use" at once.
func TestListenLockFile(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)

	path := filepath.Join(dir, "left")
	if err := os.WriteFile(path+LockSuffix, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadSocket(t, path)
	l := listen(t, path)
	l.Close()

	path = filepath.Join(dir, "held")
	fd, err := unix.Open(path+LockSuffix, unix.O_RDONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = Listen(path)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("Listen with the lock held elsewhere: %v, want ErrInUse", err)
	}
	if exists(path) {
		t.Error("a socket was created without the lock")
	}
	if !exists(path + LockSuffix) {
		t.Error("the loser deleted the holder's lock file")
	}
}

// faults.md D6: git's own "<path>.lock" is neither created, nor an
// obstacle, nor touched.
func TestListenIgnoresGitLock(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	if err := os.WriteFile(path+".lock", []byte("git"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := lstat(t, path+".lock")
	l := listen(t, path)
	l.Close()
	after := lstat(t, path+".lock")
	if after.Ino != before.Ino || after.Size != before.Size {
		t.Error("git's lock file was touched")
	}
}

// A start-up that died between bind and rename leaves a dead socket under
// the start-up name; the next start clears it. A non-socket there is never
// removed.
func TestListenStartupName(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	path := filepath.Join(dir, "s")
	tmp := filepath.Join(dir, tmpName("s"))
	deadSocket(t, tmp)
	l := listen(t, path)
	if exists(tmp) {
		t.Error("dead start-up socket not cleared")
	}
	l.Close()
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Errorf("left behind after Close: %v", names)
	}

	if err := os.WriteFile(tmp, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); !errors.Is(err, ErrNotSocket) {
		t.Errorf("Listen with a file at the start-up name: %v, want ErrNotSocket", err)
	}
	if b, _ := os.ReadFile(tmp); string(b) != "keep" || exists(path) {
		t.Error("the file at the start-up name was touched, or a socket was published")
	}
}

// The path appears only once the socket listens, and disappears before it
// stops: a client connecting in a loop through 50 starts and stops never
// sees a socket that refuses (which a WaitIfNotFound client would take for
// a dead server).
func TestPathNeverRefuses(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	stop := make(chan struct{})
	var refused, connected int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			fd, err := connectPath(path)
			switch {
			case err == nil:
				connected++
				unix.Close(fd)
			case errors.Is(err, syscall.ECONNREFUSED):
				refused++
			}
		}
	}()
	for range 50 {
		l, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		l.Close()
	}
	close(stop)
	wg.Wait()
	if refused != 0 {
		t.Errorf("the path refused %d connections (and accepted %d)", refused, connected)
	}
	if connected == 0 {
		t.Error("the observer never connected: the test proved nothing")
	}
}

// faults.md D6, PATH-2: of 8 concurrent starters exactly one wins, every
// round, and the winner's socket is never unlinked.
func TestListenRaceGoroutines(t *testing.T) {
	leakcheck.Check(t)
	const rounds, racers = 100, 8
	path := filepath.Join(tempDir(t), "race")
	for round := range rounds {
		start := make(chan struct{})
		var wg sync.WaitGroup
		ls := make([]*Listener, racers)
		errs := make([]error, racers)
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ls[i], errs[i] = Listen(path)
			}()
		}
		if round%2 == 1 {
			deadSocket(t, path) // every other round starts from a crashed server's leftovers
		}
		close(start)
		wg.Wait()
		var winner *Listener
		for i := range racers {
			switch {
			case errs[i] == nil && winner == nil:
				winner = ls[i]
			case errs[i] == nil:
				t.Fatalf("round %d: two winners", round)
			case !errors.Is(errs[i], ErrInUse):
				t.Fatalf("round %d: loser error %v, want ErrInUse", round, errs[i])
			}
		}
		if winner == nil {
			t.Fatalf("round %d: no winner", round)
		}
		if st := lstat(t, path); uint64(st.Ino) != winner.ino || State(path) != Listening {
			t.Fatalf("round %d: the winner's socket is not at the path", round)
		}
		if err := winner.Close(); err != nil {
			t.Fatal(err)
		}
		if exists(path) || exists(path+LockSuffix) {
			t.Fatalf("round %d: leftovers after Close", round)
		}
	}
}

// PATH-2 across processes: the flock works between processes as it does
// between goroutines.
func TestListenRaceProcesses(t *testing.T) {
	leakcheck.Check(t)
	const rounds, racers = 3, 8
	path := filepath.Join(tempDir(t), "race")
	for round := range rounds {
		br, bw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		procs := make([]*running, racers)
		for i := range procs {
			procs[i] = child{mode: "race", path: path, extra: []*os.File{br}}.start(t)
		}
		// Every racer now holds br and waits for EOF on it: closing our
		// ends releases them together.
		br.Close()
		bw.Close()
		wins := 0
		for _, p := range procs {
			r, err := p.line()
			switch {
			case err != nil:
				t.Errorf("round %d: reading a racer: %v", round, err)
			case r == "win":
				wins++
			case r != "inuse":
				t.Errorf("round %d: racer said %q", round, r)
			}
		}
		if wins != 1 {
			t.Errorf("round %d: %d winners, want 1", round, wins)
		}
		if State(path) != Listening {
			t.Errorf("round %d: nobody listening after the race", round)
		}
		for _, p := range procs {
			if err := p.finish(); err != nil {
				t.Errorf("round %d: racer exit: %v", round, err)
			}
		}
		if exists(path) || exists(path+LockSuffix) {
			t.Errorf("round %d: leftovers after the winner closed", round)
		}
	}
}

// faults.md D4, D7, PATH-1: after kill -9 of the owner, the socket file and
// the lock file remain and the next Listen succeeds at once.
func TestListenRestartAfterKill(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	h := child{mode: "hold", path: path}.start(t)
	defer h.finish()
	if line, err := h.line(); line != "ready" {
		h.cmd.Process.Kill()
		t.Fatalf("helper: %q, %v", line, err)
	}
	if State(path) != Listening {
		t.Error("helper's socket not listening")
	}
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	if !exists(path) || !exists(path+LockSuffix) {
		t.Fatalf("expected the killed server's socket and lock file to remain")
	}
	start := time.Now()
	l, err := Listen(path)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}
	defer l.Close()
	t.Logf("restart after kill -9 took %v", took)
	if took > 2*time.Second {
		t.Errorf("restart took %v", took)
	}
	if State(path) != Listening {
		t.Error("restarted listener not reachable")
	}
}

// faults.md D8, PATH-3: a stolen socket is noticed within a second, under
// load, and Close leaves the thief's socket alone.
func TestTheftDetected(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path)
	serve(t, l)

	// Load: a client connecting and closing in a loop throughout.
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
	stop := func() {
		stopOnce.Do(func() {
			close(stopLoad)
			loadWG.Wait()
		})
	}
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
	// The thief still serves (its backlog may be full of the load's
	// connections: drain them).
	var drain sync.WaitGroup
	drain.Add(1)
	go func() {
		defer drain.Done()
		for {
			c, err := thief.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer func() {
		thief.Close()
		drain.Wait()
	}()
	c, err := Dial(context.Background(), path, WaitIfBusy())
	if err != nil {
		t.Fatalf("thief unreachable: %v", err)
	}
	c.Close()
}

// faults.md D9: deletion, and renaming the directory, count as theft; Close
// then removes our own socket wherever its directory went.
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

// faults.md D1, PATH-1: a 190-byte path works for Listen, State and Dial,
// with the socket at the path itself.
func TestLongPath(t *testing.T) {
	leakcheck.Check(t)
	path := longPath(t, tempDir(t), "sock", 190)
	l := listen(t, path)
	serve(t, l)
	st := lstat(t, path)
	if !isSock(&st) || st.Mode&0o777 != 0o600 {
		t.Fatalf("no 0600 socket at the long path: %o", st.Mode)
	}
	if State(path) != Listening {
		t.Error("State of the long path is not listening")
	}
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Errorf("second Listen on the long path: %v, want ErrInUse", err)
	}
	l.Close()
	if exists(path) {
		t.Error("Close left the long-path socket")
	}
}

// faults.md D2: sizes at and around sun_path's limit.
func TestPathLimits(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	for _, n := range []int{MaxPathLen, MaxPathLen + 1, MaxPathLen + 2} {
		path := longPath(t, dir, fmt.Sprint("s", n), n)
		l, err := Listen(path)
		if err != nil {
			t.Errorf("%d-byte path: %v", n, err)
			continue
		}
		c, err := Dial(context.Background(), path)
		if err != nil {
			t.Errorf("%d-byte path: Dial: %v", n, err)
		} else {
			c.Close()
		}
		l.Close()
	}

	// A long basename: its /proc route does not fit, but it is bound under
	// a short start-up name and reached through an O_PATH handle.
	path := filepath.Join(dir, strings.Repeat("b", MaxPathLen))
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen with a %d-byte basename: %v", MaxPathLen, err)
	}
	serve(t, l)
	if State(path) != Listening {
		t.Error("long basename: not listening")
	}
	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Errorf("second Listen on a long basename: %v, want ErrInUse (the probe must reach it)", err)
	}
	l.Close()

	// A basename git's clients could not connect to even after chdir.
	path = filepath.Join(dir, strings.Repeat("b", MaxPathLen+1))
	_, err = Listen(path)
	var pe *PathTooLongError
	if !errors.As(err, &pe) || !pe.Basename || pe.Len != MaxPathLen+1 || !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("Listen with a 108-byte basename: %v, want a basename *PathTooLongError", err)
	}
	if exists(path + LockSuffix) {
		t.Error("lock file created for an impossible path")
	}

	// Without /proc, the plain path must fit.
	swap(t, &procAvailable, func() bool { return false })
	short := longPath(t, dir, "p107", MaxPathLen)
	l = listen(t, short)
	serve(t, l)
	if State(short) != Listening {
		t.Error("107-byte path without /proc: not listening")
	}
	long := longPath(t, dir, "p108", MaxPathLen+1)
	_, err = Listen(long)
	if !errors.As(err, &pe) || pe.Basename || pe.Len != MaxPathLen+1 || pe.Max != MaxPathLen {
		t.Errorf("108-byte path without /proc: %v, want *PathTooLongError{Len: 108, Max: 107}", err)
	}
	_, err = Dial(context.Background(), long)
	var de *DialError
	if !errors.As(err, &de) || de.State != OtherError || !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("Dial of a 108-byte path without /proc: %v, want OtherError with ENAMETOOLONG", err)
	}
}

// faults.md D3.
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

// faults.md D11, D12.
func TestSocketDirectoryChecks(t *testing.T) {
	leakcheck.Check(t)
	top := tempDir(t)
	mk := func(name string, mode os.FileMode) string {
		d := filepath.Join(top, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil { // test setup, not code under test
			t.Fatal(err)
		}
		return d
	}
	owned := mk("owned", 0o700)
	if err := os.Chown(owned, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	target := mk("target", 0o700)
	if err := os.Symlink(target, filepath.Join(top, "link")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		dir    string
		opts   []Option
		reason string // substring of InsecureDirError.Reason; "" means Listen succeeds
	}{
		{"0777", mk("open", 0o777), nil, "write"},
		{"1777 like /tmp", mk("sticky", 0o1777), nil, "write"},
		{"0755 private socket", mk("r755", 0o755), nil, "private"},
		{"0711 private socket", mk("r711", 0o711), nil, "private"},
		{"0755 public socket", mk("p755", 0o755), []Option{WithMode(0o666)}, ""},
		{"0750 group socket", mk("g750", 0o750), []Option{WithMode(0o660)}, ""},
		{"0770 group socket", mk("g770", 0o770), []Option{WithMode(0o660)}, "write"},
		{"owned by 65534", owned, nil, "owned by uid 65534"},
		{"symlinked directory", filepath.Join(top, "link"), nil, "symlink"},
		{"symlinked directory, opted out", filepath.Join(top, "link"), []Option{WithInsecureDir()}, ""},
		{"0777 opted out", mk("open2", 0o777), []Option{WithInsecureDir()}, ""},
		{"intermediate symlink", filepath.Join(top, "link", "sub"), nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(tc.dir, "s")
			l, err := Listen(path, tc.opts...)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				l.Close()
				return
			}
			var ide *InsecureDirError
			if !errors.As(err, &ide) || !errors.Is(err, ErrInsecureDir) {
				t.Fatalf("Listen: %v, want *InsecureDirError", err)
			}
			if !strings.Contains(ide.Reason, tc.reason) {
				t.Errorf("reason %q does not mention %q", ide.Reason, tc.reason)
			}
			if msg := err.Error(); !strings.Contains(msg, "0700") || !strings.Contains(msg, "WithInsecureDir") {
				t.Errorf("message is not actionable: %s", msg)
			}
			if exists(path) || exists(path+LockSuffix) {
				t.Error("something was created in a refused directory")
			}
		})
	}
	if !exists(filepath.Join(target, "sub")) {
		t.Error("the intermediate-symlink case did not create its directory in the target")
	}

	// /tmp itself is refused by default.
	if st, err := os.Stat("/tmp"); err == nil && st.Mode().Perm()&0o022 != 0 {
		p := fmt.Sprintf("/tmp/pktipc-%d.sock", os.Getpid())
		if _, err := Listen(p); !errors.Is(err, ErrInsecureDir) {
			t.Errorf("Listen in /tmp: %v, want ErrInsecureDir", err)
		}
		if exists(p) || exists(p+LockSuffix) {
			t.Error("files created in /tmp")
		}
	}

	// A missing parent of the socket directory is not created.
	_, err := Listen(filepath.Join(top, "no", "such", "s"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Listen under a missing parent: %v, want ErrNotExist", err)
	}
}

// faults.md D13.
func TestUnsupportedFilesystem(t *testing.T) {
	leakcheck.Check(t)
	swap(t, &sysFstatfs, func(fd int, st *unix.Statfs_t) error {
		st.Type = unix.NFS_SUPER_MAGIC
		return nil
	})
	path := filepath.Join(tempDir(t), "s")
	if _, err := Listen(path); !errors.Is(err, ErrUnsupportedFS) || !strings.Contains(err.Error(), "NFS") {
		t.Fatalf("Listen on NFS: %v, want ErrUnsupportedFS naming NFS", err)
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

// faults.md F5: every descriptor uds opens is close-on-exec.
func TestCloseOnExec(t *testing.T) {
	leakcheck.Check(t)
	before := fdSet(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path)
	ch := make(chan *net.UnixConn, 1)
	go func() {
		c, _, _ := l.AcceptUnix()
		ch <- c
	}()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
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

// SO_PASSRIGHTS is off on the listener and accepted connections by default
// (Linux 6.16+), so SCM_RIGHTS sent to them fails; WithPassRights(true)
// leaves it on.
func TestPassRights(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	for _, pass := range []bool{false, true} {
		path := filepath.Join(dir, fmt.Sprint("s", pass))
		l := listen(t, path, WithPassRights(pass))
		ch := make(chan *net.UnixConn, 1)
		go func() {
			c, _, _ := l.AcceptUnix()
			ch <- c
		}()
		c, err := Dial(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		s := <-ch
		if s == nil {
			c.Close()
			t.Fatal("accept failed")
		}
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
