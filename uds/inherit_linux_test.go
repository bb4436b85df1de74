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
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// childInherit takes over what its service manager (the test) passed:
// it prints what it got and whether descriptor 5 is close-on-exec, answers
// one connection on each listener (unless its policy denies everyone:
// opt "deny"), writes on each connection, and exits.
func childInherit(opt string) int {
	var opts []Option
	if opt == "deny" {
		opts = append(opts, WithPolicy(PolicyFunc(func(Cred) error { return ErrDenied })))
	}
	a, err := Inherited(opts...)
	notTaken := 0
	var ie *InheritError
	for _, e := range unwrapAll(err) {
		if errors.As(e, &ie) {
			notTaken++
		}
	}
	env := "unset"
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			env = "set"
		}
	}
	fd5 := "fd5=inheritable"
	if flags, err := unixFcntl(5); err == nil && flags&syscall.FD_CLOEXEC != 0 {
		fd5 = "fd5=cloexec"
	}
	fmt.Printf("listeners=%d conns=%d nottaken=%d env=%s %s\n", len(a.Listeners), len(a.Conns), notTaken, env, fd5)
	for _, c := range a.Conns {
		c.Write([]byte("conn"))
		c.Close()
	}
	for _, l := range a.Listeners {
		if opt != "deny" {
			if c, _, err := l.AcceptUnix(); err == nil {
				c.Write([]byte("hello"))
				c.Close()
			}
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
// it: a listener, served and left in place on Close; a connected socket,
// once its peer passes the policy; not a descriptor that is no socket,
// which it reports and leaves open, close-on-exec. It unsets the variables.
func TestInheritedSockets(t *testing.T) {
	leakcheck.Check(t)
	for _, tc := range []struct {
		opt, line, conn, hello string
	}{
		{"", "listeners=1 conns=1 nottaken=1 env=unset fd5=cloexec", "conn", "hello"},
		{"deny", "listeners=1 conns=0 nottaken=2 env=unset fd5=cloexec", "", ""},
		// LISTEN_FDS says 8 for the 3 passed: the numbers after them are
		// free, or the runtime's, and the copies taken over land among
		// them; each socket is still taken over once, and works.
		{"overcount", "listeners=1 conns=1", "conn", "hello"},
	} {
		t.Run("opt="+tc.opt, func(t *testing.T) {
			line, conn, hello := runActivated(t, tc.opt)
			if tc.opt == "overcount" {
				line = strings.Join(strings.Fields(line)[:2], " ") // how many of the rest are the runtime's varies
			}
			if line != tc.line || conn != tc.conn || hello != tc.hello {
				t.Fatalf("the child says %q, writes %q on the connection and %q on the listener; want %q, %q, %q",
					line, conn, hello, tc.line, tc.conn, tc.hello)
			}
		})
	}
}

// runActivated starts a child as a service manager would, with a
// listening socket, a connected one and a pipe from descriptor 3 on, and
// returns its report, what it wrote on the connection, and what a client
// of the listener read.
func runActivated(t *testing.T, opt string) (line, conn, hello string) {
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
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	// LISTEN_PID must name the child itself: a shell sets it to its own
	// pid, which exec keeps.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, os.Args[0])
	count := "3"
	if opt == "overcount" {
		count = "8"
	}
	cmd.Env = append(os.Environ(), childEnv+"=inherit", childOptEnv+"="+opt, "LISTEN_FDS="+count, "LISTEN_FDNAMES=a:b:c")
	cmd.ExtraFiles = []*os.File{lf, theirs, pw} // descriptors 3, 4, 5
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A child stuck (a listener broken by a copy taken over twice, say)
	// fails the test instead of hanging it.
	stuck := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer stuck.Stop()
	theirs.Close()
	pw.Close()
	buf := make([]byte, 128)
	n, err := out.Read(buf)
	if err != nil {
		cmd.Wait()
		t.Fatal(err)
	}
	line = strings.TrimSpace(string(buf[:n]))
	got, _ := io.ReadAll(ours)
	conn = string(got)
	if opt != "deny" {
		c, err := net.Dial("unix", path)
		if err != nil {
			cmd.Wait()
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		got, _ = io.ReadAll(c)
		c.Close()
		hello = string(got)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("the child: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the activated socket's path is gone after the child's Close: %v", err)
	}
	return line, conn, hello
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
