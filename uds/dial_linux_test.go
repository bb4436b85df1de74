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
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// State and Dial (without wait options) in each situation git's client and
// its is-active probe tell apart, with git's answers.
func TestStateAndDialLikeGit(t *testing.T) {
	leakcheck.Check(t)
	cases := gitCases(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := State(tc.path); got != tc.state {
				t.Errorf("State = %v, want %v", got, tc.state)
			}
			c, err := Dial(context.Background(), tc.path)
			if tc.dial == Listening {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.Close()
				return
			}
			var de *DialError
			if !errors.As(err, &de) {
				t.Fatalf("Dial: %v, want *DialError", err)
			}
			if de.State != tc.dial || de.Attempts != 1 || !errors.Is(err, tc.errno) {
				t.Errorf("Dial: state %v attempts %d err %v; want %v, 1 attempt, %v", de.State, de.Attempts, err, tc.dial, tc.errno)
			}
			switch tc.dial {
			case NotListening:
				if !errors.Is(err, ErrNotListening) {
					t.Error("not errors.Is(ErrNotListening)")
				}
			case PathNotFound:
				if !errors.Is(err, ErrNotFound) {
					t.Error("not errors.Is(ErrNotFound)")
				}
			}
		})
	}
}

// gitCase is one situation at a path and git's answers to it.
type gitCase struct {
	name  string
	path  string
	state ActiveState // State
	dial  ActiveState // Dial without waiting (Listening: success)
	errno error       // Dial's cause, when it fails
}

// gitCases makes the paths of TestStateAndDialLikeGit and returns its cases.
func gitCases(t *testing.T) []gitCase {
	t.Helper()
	dir := tempDir(t)
	live := filepath.Join(dir, "live")
	serve(t, listen(t, live))
	longLive := longPath(t, dir, "long", 190)
	serve(t, listen(t, longLive))
	dead := filepath.Join(dir, "dead")
	deadSocket(t, dead)
	longDead := longPath(t, dir, "longdead", 150)
	deadSocket(t, longDead)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o700)
	toLive := filepath.Join(dir, "to-live")
	os.Symlink(live, toLive)
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "nowhere"), dangling)
	loop := filepath.Join(dir, "loop")
	os.Symlink(loop, loop)

	return []gitCase{
		{"missing", filepath.Join(dir, "missing"), NotListening, PathNotFound, syscall.ENOENT},
		{"missing parent", filepath.Join(file, "x"), NotListening, OtherError, syscall.ENOTDIR},
		{"regular file", file, InvalidPath, NotListening, syscall.ECONNREFUSED},
		{"directory", sub, InvalidPath, NotListening, syscall.ECONNREFUSED},
		{"symlink to live socket", toLive, InvalidPath, Listening, nil},
		{"dangling symlink", dangling, InvalidPath, PathNotFound, syscall.ENOENT},
		{"symlink loop inside the path", filepath.Join(loop, "x"), InvalidPath, OtherError, syscall.ELOOP},
		{"component too long", filepath.Join(dir, strings.Repeat("n", 300)), InvalidPath, OtherError, syscall.ENAMETOOLONG},
		{"dead socket", dead, NotListening, NotListening, syscall.ECONNREFUSED},
		{"dead socket, 150 bytes", longDead, NotListening, NotListening, syscall.ECONNREFUSED},
		{"live socket", live, Listening, Listening, nil},
		{"live socket, 190 bytes", longLive, Listening, Listening, nil},
	}
}

// The remaining rows of git's tables need connect results a test cannot
// produce on demand: inject them.
func TestStateAndDialInjected(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	deadSocket(t, path) // lstat must find a socket
	for _, tc := range []struct {
		errno syscall.Errno
		state ActiveState // State (lstat found the socket, then connect failed)
		dial  ActiveState
	}{
		{syscall.ENOENT, PathNotFound, PathNotFound}, // vanished between lstat and connect
		{syscall.ECONNREFUSED, NotListening, NotListening},
		{syscall.ETIMEDOUT, NotListening, NotListening},
		{syscall.EAGAIN, Listening, NotListening}, // full backlog: alive, but busy
		{syscall.EACCES, OtherError, OtherError},
		{syscall.ENAMETOOLONG, OtherError, OtherError},
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			swap(t, &sysConnect, func(int, unix.Sockaddr) error { return tc.errno })
			swap(t, &dialUnix, func(context.Context, string) (*net.UnixConn, error) {
				return nil, &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", tc.errno)}
			})
			if got := State(path); got != tc.state {
				t.Errorf("State = %v, want %v", got, tc.state)
			}
			_, err := Dial(context.Background(), path)
			var de *DialError
			if !errors.As(err, &de) || de.State != tc.dial || !errors.Is(err, tc.errno) {
				t.Errorf("Dial: %v, want state %v with %v", err, tc.dial, tc.errno)
			}
		})
	}
}

// git's wait_if_not_found: a server starting 200 ms later is reached.
func TestDialWaitIfNotFound(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "late")
	var wg sync.WaitGroup
	var l *Listener
	var lerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(200 * time.Millisecond)
		l, lerr = Listen(path)
	}()
	start := time.Now()
	c, err := Dial(context.Background(), path, WaitIfNotFound())
	took := time.Since(start)
	wg.Wait()
	if lerr != nil {
		t.Fatal(lerr)
	}
	defer l.Close()
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
	if took < 200*time.Millisecond {
		t.Errorf("Dial returned after %v, before the server existed", took)
	}
	t.Logf("reached a server started 200 ms later after %v", took)
}

// Waiting ends after git's 20 attempts (about 1 s) with NotListening, or
// at the context's deadline, whichever comes first.
func TestDialWaitLimits(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	dead := filepath.Join(dir, "dead")
	deadSocket(t, dead)

	for _, tc := range []struct {
		name  string
		path  string
		opt   DialOption
		errno error
	}{
		{"busy", dead, WaitIfBusy(), syscall.ECONNREFUSED},
		{"not found", filepath.Join(dir, "never"), WaitIfNotFound(), syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Dial(context.Background(), tc.path, tc.opt)
			took := time.Since(start)
			var de *DialError
			if !errors.As(err, &de) || de.State != NotListening || de.Attempts != connectAttempts || !errors.Is(err, tc.errno) {
				t.Fatalf("Dial: %v, want NotListening after %d attempts with %v", err, connectAttempts, tc.errno)
			}
			if min := (connectAttempts - 1) * connectStep; took < min {
				t.Errorf("gave up after %v, before %v of sleeps", took, min)
			}
			t.Logf("gave up after %v", took)

			start = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err = Dial(ctx, tc.path, tc.opt)
			took = time.Since(start)
			// The deadline, not the attempts, ended it: fewer than 20 attempts.
			if !errors.As(err, &de) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, tc.errno) || de.Attempts >= connectAttempts {
				t.Fatalf("Dial with a 200 ms deadline: %v, want DeadlineExceeded before %d attempts", err, connectAttempts)
			}
			if took < 200*time.Millisecond {
				t.Errorf("returned after %v, before the deadline", took)
			}
			t.Logf("200 ms deadline: returned after %v and %d attempts", took, de.Attempts)
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Dial(ctx, dead)
	var de *DialError
	if !errors.As(err, &de) || de.Attempts != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a cancelled context: %v, want no attempt and Canceled", err)
	}
}

// A full backlog gives EAGAIN on a non-blocking connect: NotListening
// without waiting, Listening for State, and success with WaitIfBusy once
// the server accepts.
func TestDialBacklogFull(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	l := listen(t, path, WithBacklog(1))
	var queued []int
	defer func() {
		for _, fd := range queued {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := connectPath(path)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, fd)
		if len(queued) > 16 {
			t.Fatal("backlog never filled")
		}
	}
	_, err := Dial(context.Background(), path)
	if !errors.Is(err, ErrNotListening) || !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("Dial to a full backlog: %v, want NotListening with EAGAIN", err)
	}
	if State(path) != Listening {
		t.Error("State of a server with a full backlog is not listening")
	}
	serve(t, l)
	c, err := Dial(context.Background(), path, WaitIfBusy())
	if err != nil {
		t.Fatalf("Dial with WaitIfBusy once the server accepts: %v", err)
	}
	c.Close()
}

func TestDialServerPolicy(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	serve(t, listen(t, path))
	_, err := Dial(context.Background(), path, ServerPolicy(AllowUIDs(4242)))
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, ErrDenied) || de.State != OtherError {
		t.Errorf("Dial with a server policy that refuses: %v, want ErrDenied", err)
	}
	c, err := Dial(context.Background(), path, ServerPolicy(SameUser()))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

}

// The client side of unreadable credentials: a server whose credentials
// cannot be read is refused.
func TestDialServerCredFailure(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(tempDir(t), "s")
	// Swapped before the server starts: its accept loop reads the seam too
	// (and so denies us as well, which does not matter here).
	swap(t, &getPeerCred, func(int) (unix.Ucred, error) { return unix.Ucred{}, syscall.EINVAL })
	serve(t, listen(t, path))
	if _, err := Dial(context.Background(), path, ServerPolicy(AllowAll())); !errors.Is(err, ErrDenied) || !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Dial when SO_PEERCRED fails: %v, want ErrDenied", err)
	}
}

func TestDialBadInput(t *testing.T) {
	leakcheck.Check(t)
	huge := "/" + strings.Repeat("x/", 3000) + "s" // beyond PATH_MAX
	if s := State(huge); s != InvalidPath {
		t.Errorf("State of a %d-byte path = %v, want invalid path", len(huge), s)
	}
	if _, err := Dial(context.Background(), huge); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("Dial of a %d-byte path: %v, want ENAMETOOLONG", len(huge), err)
	}
	for _, p := range []string{"", "a\x00b"} {
		_, err := Dial(context.Background(), p)
		var de *DialError
		if !errors.As(err, &de) || de.State != OtherError || !errors.Is(err, ErrInvalidPath) {
			t.Errorf("Dial(%q): %v, want OtherError with ErrInvalidPath", p, err)
		}
		if s := State(p); s == Listening {
			t.Errorf("State(%q) = %v", p, s)
		}
	}
	//lint:ignore SA1012 a nil context must be an error, not a panic
	if _, err := Dial(nil, "x"); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Dial(nil ctx): %v, want ErrInvalidOption", err)
	}
	if _, err := Dial(context.Background(), "x", nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Dial with a nil option: %v", err)
	}
	if _, err := Dial(context.Background(), "@x", DialAbstract(), ServerPolicy(nil)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("ServerPolicy(nil): %v", err)
	}
	if _, err := PeerCred(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("PeerCred(nil): %v", err)
	}
}

func TestListenBadInput(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	for _, p := range []string{"", "a\x00b", "/", filepath.Join(dir, "s\x00")} {
		if _, err := Listen(p); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("Listen(%q): %v, want ErrInvalidPath", p, err)
		}
	}
	for _, p := range []string{"", "@", "@a\x00b"} {
		if _, err := Listen(p, WithAbstract(), WithPolicy(AllowAll())); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("abstract Listen(%q): %v, want ErrInvalidPath", p, err)
		}
		if _, err := Dial(context.Background(), p, DialAbstract()); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("abstract Dial(%q): %v, want ErrInvalidPath", p, err)
		}
	}
	if _, err := Listen(filepath.Join(dir, "s"), nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("nil Option: %v", err)
	}
	huge := dir + strings.Repeat("/x", 3000)
	if _, err := Listen(huge); err == nil {
		t.Errorf("Listen of a %d-byte path succeeded", len(huge))
	}
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}
