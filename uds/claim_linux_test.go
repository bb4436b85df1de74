//go:build linux

package uds

import (
	"errors"
	"fmt"
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

// A dead socket left at the path by a crashed server is replaced.
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

// A non-socket at the path is never unlinked.
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

// A lock file left by a crash does not block; one held by a live starter
// gives "in use" at once.
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

// git's own "<path>.lock" is neither created, nor an obstacle, nor touched.
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

// Of 8 concurrent starters exactly one wins, every round, and the winner's
// socket is never unlinked.
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

// The start-up race across processes: the flock works between processes as it does
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

// After kill -9 of the owner, the socket file and the lock file remain and
// the next Listen succeeds at once.
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
