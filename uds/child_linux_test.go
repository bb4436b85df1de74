//go:build linux

package uds

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helper processes: the test binary re-executed with childEnv naming a
// mode, the pattern of Go's own net tests. Each mode prints one result line.
const (
	childEnv     = "UDS_TEST_CHILD"
	childPathEnv = "UDS_TEST_PATH"
	childOptEnv  = "UDS_TEST_OPT"
	nobody       = 65534 // the uid/gid other-user tests run as
)

func runChild() bool {
	mode := os.Getenv(childEnv)
	if mode == "" {
		return false
	}
	path := os.Getenv(childPathEnv)
	opt := os.Getenv(childOptEnv)
	var code int
	switch mode {
	case "hold":
		code = childHold(path)
	case "race":
		code = childRace(path)
	case "peer":
		code = childPeer(path, opt == "abstract")
	case "state":
		fmt.Println(State(path))
	case "listen-group":
		code = childListenGroup(path, opt)
	case "mount":
		code = childMount(path)
	case "inherit":
		code = childInherit(opt)
	default:
		fmt.Println("unknown mode", mode)
		code = 2
	}
	os.Exit(code)
	return true
}

// childHold listens, says "ready", and holds the socket until stdin closes
// (or it is killed).
func childHold(path string) int {
	l, err := Listen(path)
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	l.Close()
	return 0
}

// childRace waits for the barrier (EOF on descriptor 3), races for path,
// reports, and if it won holds the socket until stdin closes.
func childRace(path string) int {
	barrier := os.NewFile(3, "barrier")
	io.Copy(io.Discard, barrier)
	barrier.Close()
	l, err := Listen(path)
	switch {
	case err == nil:
		fmt.Println("win")
	case errors.Is(err, ErrInUse):
		fmt.Println("inuse")
		return 0
	default:
		fmt.Println("err", err)
		return 1
	}
	io.Copy(io.Discard, os.Stdin)
	l.Close()
	return 0
}

// childPeer connects, writes a request, and reports how the server
// answered: "write <ok|err> read <eof|reset|data N|timeout|err>", or
// "dial <errno>".
func childPeer(path string, abstract bool) int {
	var opts []DialOption
	if abstract {
		opts = append(opts, DialAbstract(), ServerPolicy(AllowAll()))
	}
	c, err := Dial(context.Background(), path, opts...)
	if err != nil {
		fmt.Println("dial", errnoName(err))
		return 0
	}
	defer c.Close()
	w := "ok"
	if _, err := c.Write([]byte("0009hello0000")); err != nil {
		w = errnoName(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	var r string
	switch {
	case n > 0:
		r = fmt.Sprintf("data %d", n)
	case errors.Is(err, io.EOF):
		r = "eof"
	case errors.Is(err, syscall.ECONNRESET):
		r = "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		r = "timeout"
	default:
		r = errnoName(err)
	}
	fmt.Println("write", w, "read", r)
	return 0
}

func childListenGroup(path, group string) int {
	l, err := Listen(path, WithGroup(group), WithMode(0o660), WithDirMode(0o750))
	if err != nil {
		fmt.Println("err", errnoName(err))
		return 0
	}
	l.Close()
	fmt.Println("ok")
	return 0
}

func errnoName(err error) string {
	for _, e := range []struct {
		errno syscall.Errno
		name  string
	}{
		{syscall.EACCES, "EACCES"}, {syscall.EPERM, "EPERM"}, {syscall.ECONNREFUSED, "ECONNREFUSED"},
		{syscall.ENOENT, "ENOENT"}, {syscall.EPIPE, "EPIPE"}, {syscall.ECONNRESET, "ECONNRESET"},
	} {
		if errors.Is(err, e.errno) {
			return e.name
		}
	}
	return "other:" + strings.ReplaceAll(err.Error(), " ", "_")
}

// childMount listens at path, mounts a tmpfs over the socket's directory
// (in its own mount namespace: see child.ownMounts) and reports how the
// theft was noticed: "stolen <checks started by events>", "missed",
// "incomplete" (the watch did not cover the path) or "nomount <error>".
func childMount(path string) int {
	l, err := Listen(path, WithWatchInterval(MaxWatchInterval))
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	defer l.Close()
	if !l.evented {
		fmt.Println("incomplete")
		return 0
	}
	if err := syscall.Mount("pktipc-test", filepath.Dir(path), "tmpfs", 0, "size=64k"); err != nil {
		fmt.Println("nomount", errnoName(err))
		return 0
	}
	select {
	case <-l.Stolen():
		fmt.Println("stolen", l.notified.Load())
	case <-time.After(5 * time.Second):
		fmt.Println("missed")
	}
	return 0
}

// child describes one helper process.
type child struct {
	mode, path, opt string
	asNobody        bool // run as uid/gid 65534 (needs root)
	ownMounts       bool // in a mount namespace of its own (needs root), whose mounts die with it
	bin             string
	extra           []*os.File
}

// command builds the helper's command; the caller starts and waits for it.
func (c child) command(ctx context.Context) *exec.Cmd {
	bin := c.bin
	if bin == "" {
		bin = os.Args[0]
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), childEnv+"="+c.mode, childPathEnv+"="+c.path, childOptEnv+"="+c.opt)
	cmd.ExtraFiles = c.extra
	if c.asNobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	if c.ownMounts {
		// The child's mounts are private to its namespace (os/exec makes
		// them so), and nothing is left mounted when it exits.
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	return cmd
}

// run runs the helper to completion and returns its output line.
func (c child) run(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := c.command(ctx).CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s: %v: %s", c.mode, err, out)
	}
	return strings.TrimSpace(string(out))
}

// running is a started helper with pipes.
type running struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// start starts the helper with pipes; the caller reads its lines, closes
// stdin to let it finish, and waits for it.
func (c child) start(t *testing.T) *running {
	t.Helper()
	cmd := c.command(context.Background())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &running{cmd: cmd, stdin: stdin, out: bufio.NewReader(out)}
}

// line reads the helper's next output line ("" with an error at EOF).
func (r *running) line() (string, error) {
	s, err := r.out.ReadString('\n')
	return strings.TrimSpace(s), err
}

// finish closes stdin and waits for the helper to exit.
func (r *running) finish() error {
	r.stdin.Close()
	return r.cmd.Wait()
}

// requireRoot skips tests that switch uids.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as uid 65534")
	}
}

// nobodyBinary copies the test binary where uid 65534 can execute it: the
// go build cache directory is private to us.
func nobodyBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pkbin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "uds.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}
