package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/events"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// needEvents skips where package events does not run.
func needEvents(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("package events runs on Linux only")
	}
}

// startPongd runs `ipcbench pongd args...` with env added to its
// environment and waits for its "serving" line. The process is killed at
// cleanup if the test left it running.
func startPongd(t *testing.T, env []string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd, _ := ipcbench(t, append([]string{"pongd"}, args...)...)
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if !strings.HasPrefix(l, "pongd: serving ") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("pongd %s: first line %q; stderr %s", strings.Join(args, " "), l, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("pongd %s did not start: %s", strings.Join(args, " "), stderr.String())
	}
	return cmd, &stderr
}

// stopPongd stops pongd with sig and expects a clean exit.
func stopPongd(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer, sig syscall.Signal) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("pongd after %v: %v: %s", sig, err, stderr.String())
	}
}

// pongd and pong talk in each format, with the format's run directory:
// --rundir for pktline, LibIPC's $RUNDIR and $IPC_RUNDIR for the others
// (and --rundir overriding them). Every echo is checked by pong; a signal
// stops pongd with status 0 and its socket removed.
func TestPongRoundTrip(t *testing.T) {
	needEvents(t)
	leakcheck.Check(t)
	for _, tc := range []struct {
		format string
		envVar string // the layout's variable, or "" to pass --rundir
		sig    syscall.Signal
	}{
		{"pktline", "", syscall.SIGINT},
		{"libipc", "RUNDIR", syscall.SIGTERM},
		{"libipc-c", "IPC_RUNDIR", syscall.SIGTERM},
	} {
		t.Run(tc.format, func(t *testing.T) {
			dir := gitDir(t)
			flags := []string{"--service=pong", "--format=" + tc.format}
			var env []string
			if tc.envVar == "" {
				flags = append(flags, "--rundir="+dir)
			} else {
				env = []string{tc.envVar + "=" + dir}
			}
			daemon, stderr := startPongd(t, env, flags...)
			sock := filepath.Join(dir, "pong")
			if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
				t.Fatalf("no socket at %s: %v", sock, err)
			}

			out, errOut, code := runIpcbench(t, env, append([]string{"pong", "--count=20", "--size=100"}, flags...)...)
			if code != exitOK || !strings.Contains(out, "pong: 20 messages of 100 B echoed by pong ("+tc.format+")") ||
				!strings.Contains(out, "p50 ") || !strings.Contains(out, "p99 ") {
				t.Errorf("pong: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			out, errOut, code = runIpcbench(t, env, append([]string{"pong", "--message=hello, pongd"}, flags...)...)
			if code != exitOK || !strings.Contains(out, `pong: "hello, pongd" echoed by pong`) {
				t.Errorf("pong --message: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			if tc.envVar != "" {
				// --rundir wins over the layout's variable.
				over := []string{tc.envVar + "=" + filepath.Join(dir, "elsewhere")}
				_, errOut, code = runIpcbench(t, over, append([]string{"pong", "--count=1", "--rundir=" + dir}, flags...)...)
				if code != exitOK {
					t.Errorf("pong --rundir with %s set elsewhere: exit %d, %s", tc.envVar, code, errOut)
				}
			} else {
				// A live service's name is not taken.
				_, errOut, code = runIpcbench(t, nil, append([]string{"pongd"}, flags...)...)
				if code != exitFail || !strings.Contains(errOut, "in use") {
					t.Errorf("second pongd: exit %d, %q", code, errOut)
				}
			}

			stopPongd(t, daemon, stderr, tc.sig)
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left after %v: %v", tc.sig, err)
			}
			if stderr.Len() != 0 {
				t.Errorf("pongd stderr: %s", stderr.String())
			}
		})
	}
}

// pongd speaks each format on the wire as LibIPC does (the golden bytes
// of the LibIPC spec come back unchanged, a pkt-line message of one
// largest packet too), and a message over 4 MiB, more than events' default
// outbound queue, is echoed too.
func TestPongdWire(t *testing.T) {
	needEvents(t)
	leakcheck.Check(t)
	for _, tc := range []struct {
		format string
		frames [][]byte
	}{
		{"libipc", [][]byte{[]byte("\x00\x00\x00\x05hello")}},
		{"libipc-c", [][]byte{append([]byte("\x02\x00\x00\x00\x10\x2a"), "sixteen bytes!!!"...), []byte("\x02\x00\x00\x00\x00\x01")}},
		{"pktline", [][]byte{[]byte("0008ping0000"), append(append([]byte("fff0"), bytes.Repeat([]byte("x"), 65516)...), "0000"...)}},
	} {
		dir := gitDir(t)
		daemon, stderr := startPongd(t, nil, "--service=s", "--format="+tc.format, "--rundir="+dir)
		c, err := net.Dial("unix", filepath.Join(dir, "s"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		for _, f := range tc.frames {
			if _, err := c.Write(f); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(f))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, f) {
				t.Errorf("%s: sent %q, got %q, %v", tc.format, trim(f), trim(got), err)
			}
		}
		c.Close()
		if tc.format == "pktline" {
			_, errOut, code := runIpcbench(t, nil, "pong", "--service=s", "--rundir="+dir, "--count=2", "--size=5000000")
			if code != exitOK {
				t.Errorf("pong of 5 MB messages: exit %d, %s", code, errOut)
			}
		}
		stopPongd(t, daemon, stderr, syscall.SIGTERM)
	}
}

func trim(b []byte) []byte { return b[:min(len(b), 32)] }

// badEcho serves name in dir (format f) from this process, answering each
// message through wrong; it stops at cleanup.
func badEcho(t *testing.T, dir, name string, f events.Format, wrong func(events.Event) ([]byte, uint8)) {
	t.Helper()
	loop, err := events.New(events.WithRunDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loop.Listen(name, f); err != nil {
		loop.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// Close, at cleanup, ends the wait with events.ErrClosed.
			ev, err := loop.WaitEvent(context.Background())
			if err != nil {
				return
			}
			if ev.Kind == events.MessageRx {
				reply, userType := wrong(ev)
				loop.WriteTyped(ev.Conn, userType, reply)
			}
		}
	}()
	t.Cleanup(func() {
		loop.Close()
		<-done
	})
}

// pong exits 1 on an echo that differs from its message, in its bytes or
// (libipc-c) its user type, and when nothing listens.
func TestPongFailures(t *testing.T) {
	needEvents(t)
	leakcheck.Check(t)
	dir := gitDir(t)
	badEcho(t, dir, "flip", events.PktLine, func(ev events.Event) ([]byte, uint8) {
		b := bytes.Clone(ev.Data)
		b[len(b)-1] ^= 1
		return b, ev.UserType
	})
	badEcho(t, dir, "retype", events.LibIPCC, func(ev events.Event) ([]byte, uint8) {
		return ev.Data, ev.UserType + 1
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--service=flip", "--size=10"}, "message 1 of 100: echo differs from the message: 10 bytes for 10, first difference at byte 9"},
		{[]string{"--service=retype", "--format=libipc-c"}, "message 1 of 100: echo has user type 1, want 0"},
		{[]string{"--service=nobody"}, "cannot reach " + filepath.Join(dir, "nobody")},
	} {
		stdout, stderr, code := runIpcbench(t, nil, append([]string{"pong", "--rundir=" + dir}, tc.args...)...)
		if code != exitFail || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("pong %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
		}
	}
}

func TestPongUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pong"}, "--service is required"},
		{[]string{"pongd"}, "--service is required"},
		{[]string{"pongd", "--service=a/b"}, "invalid service name"},
		{[]string{"pong", "--service=x", "--format=zig"}, "want pktline, libipc or libipc-c"},
		{[]string{"pong", "--service=x", "--format=libipc", "--size=0"}, "--size 0: libipc carries 1 to 99992 bytes"},
		{[]string{"pong", "--service=x", "--format=libipc-c", "--size=1999989"}, "--size 1999989: libipc-c carries 0 to 1999988 bytes"},
		{[]string{"pong", "--service=x", "--format=libipc", "--message="}, "--message of 0 bytes: libipc carries 1 to 99992 bytes"},
		{[]string{"pong", "--service=x", "--count=0"}, "--count 0: want at least 1"},
		{[]string{"pong", "--service=x", "--message=hi", "--count=3"}, "does not go with --count or --size"},
		{[]string{"pongd", "--service=x", "extra"}, `unexpected argument "extra"`},
		{[]string{"pong", "--bogus"}, "flag provided but not defined: -bogus"},
	} {
		stdout, stderr, code := runIpcbench(t, nil, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("ipcbench %s: exit %d, stdout %q, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
		}
	}
	stdout, _, code := runIpcbench(t, nil, "help", "pongd")
	if code != exitOK || !strings.Contains(stdout, "-rundir") || !strings.Contains(stdout, "usage: ipcbench pongd --service NAME") {
		t.Errorf("help pongd: exit %d:\n%s", code, stdout)
	}
}
