//go:build linux

package uds

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// The path appears only once the socket listens, and disappears before it
// stops: a client connecting in a loop through 50 starts and stops never
// sees a socket that refuses (which a WaitIfNotFound client would take for
// a dead server). One exception no order of calls can close: a connect
// that looked the path up before the unlink and, preempted, reached the
// socket only after its close is refused. Such a straddle is rare even on
// a loaded machine, so a couple are let pass; a path left to a closed
// socket (or made before listen) refuses hundreds of connections here.
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
	if refused > 2 {
		t.Errorf("the path refused %d connections (and accepted %d)", refused, connected)
	}
	if connected == 0 {
		t.Error("the observer never connected: the test proved nothing")
	}
}

// A 190-byte path works for Listen, State and Dial, with the socket at the
// path itself.
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

// Sizes at and around sun_path's limit.
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
