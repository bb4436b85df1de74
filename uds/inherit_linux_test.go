//go:build linux

package uds

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// childInherit takes over what its service manager (the test) passed:
// it prints what it got, answers one connection on each listener, writes
// on each connection, and exits.
func childInherit() int {
	a, err := Inherited()
	var ie *InheritError
	closed := 0
	for _, e := range unwrapAll(err) {
		if errors.As(e, &ie) {
			closed++
		}
	}
	env := "unset"
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			env = "set"
		}
	}
	cloexec := "cloexec"
	for _, l := range a.Listeners {
		if rc, err := l.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				if flags, _ := unixFcntl(int(fd)); flags&syscall.FD_CLOEXEC == 0 {
					cloexec = "inheritable"
				}
			})
		}
	}
	fmt.Printf("listeners=%d conns=%d closed=%d env=%s %s\n", len(a.Listeners), len(a.Conns), closed, env, cloexec)
	for _, c := range a.Conns {
		c.Write([]byte("conn"))
		c.Close()
	}
	for _, l := range a.Listeners {
		c, _, err := l.AcceptUnix()
		if err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
		l.Close()
	}
	return 0
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func unixFcntl(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// A server started by a service manager takes over the sockets passed to
// it: a listener, served and left in place on Close; a connected socket;
// and not a descriptor that is no Unix stream socket, which it closes and
// reports. It unsets the variables.
func TestInheritedSockets(t *testing.T) {
	leakcheck.Check(t)
	dir := tempDir(t)
	path := filepath.Join(dir, "activated")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	lf, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "ours"), os.NewFile(uintptr(pair[1]), "theirs")
	defer ours.Close()
	defer theirs.Close()
	// Not a socket: the child closes it and says so.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()

	// LISTEN_PID must name the child itself: a shell sets it to its own
	// pid, which exec keeps.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=inherit", "LISTEN_FDS=3", "LISTEN_FDNAMES=a:b:c")
	cmd.ExtraFiles = []*os.File{lf, theirs, pw} // descriptors 3, 4, 5
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	theirs.Close()
	pw.Close()
	line := make([]byte, 128)
	n, err := out.Read(line)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(line[:n])), "listeners=1 conns=1 closed=1 env=unset cloexec"; got != want {
		t.Fatalf("the child says %q, want %q", got, want)
	}
	if got, _ := io.ReadAll(ours); string(got) != "conn" {
		t.Errorf("on the passed connection: %q", got)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, _ := io.ReadAll(c); string(got) != "hello" {
		t.Errorf("from the passed listener: %q", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the activated socket's path is gone after the child's Close: %v", err)
	}
}

// Variables meant for another process take nothing (no descriptor is
// touched) and are unset all the same.
func TestInheritedForAnotherProcess(t *testing.T) {
	for _, pid := range []string{"1", "not a pid", ""} {
		t.Setenv("LISTEN_PID", pid)
		t.Setenv("LISTEN_FDS", "2")
		a, err := Inherited()
		if err != nil || len(a.Listeners)+len(a.Conns) != 0 {
			t.Fatalf("LISTEN_PID=%q: %d listeners, %d conns, %v", pid, len(a.Listeners), len(a.Conns), err)
		}
		if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
			t.Fatalf("LISTEN_PID=%q: LISTEN_FDS left set", pid)
		}
	}
	t.Setenv("LISTEN_PID", fmt.Sprint(os.Getpid()))
	t.Setenv("LISTEN_FDS", "-1")
	if _, err := Inherited(); err == nil {
		t.Fatal("LISTEN_FDS=-1 accepted")
	}
}
