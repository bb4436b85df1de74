package fdpass

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// helperEnv selects a helper mode when the test binary re-executes itself
// as a peer process (the pattern of Go's own net tests).
const helperEnv = "FDPASS_TEST_HELPER"

// helpers are the peer processes the tests start; each reports on stdout.
var helpers = map[string]func() error{}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		h, ok := helpers[mode]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", mode)
			os.Exit(2)
		}
		if err := h(); err != nil {
			fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	leakcheck.VerifyTestMain(m)
}

// helperCmd returns a command that runs helper mode in a child process.
func helperCmd(t testing.TB, mode string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "FDPASS_TEST_ARGS="+strings.Join(args, " "))
	cmd.Stderr = os.Stderr
	return cmd
}

func helperArgs() []string { return strings.Fields(os.Getenv("FDPASS_TEST_ARGS")) }

// child is a started peer process with a Passer on its socket and a
// line reader on its stdout.
type child struct {
	t   testing.TB
	cmd *exec.Cmd
	p   *Passer
	out *bufio.Scanner
	rc  io.ReadCloser
}

func startChild(t testing.TB, cmd *exec.Cmd, opts ...Option) *child {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := StartChild(cmd, opts...)
	if err != nil {
		out.Close()
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, p: p, out: bufio.NewScanner(out), rc: out}
	t.Cleanup(c.stop)
	return c
}

// line returns the child's next stdout line, failing the test at EOF.
func (c *child) line() string {
	c.t.Helper()
	// A stuck child fails the test instead of hanging it.
	if f, ok := c.rc.(*os.File); ok {
		f.SetReadDeadline(time.Now().Add(30 * time.Second))
	}
	if !c.out.Scan() {
		c.t.Fatalf("child stdout ended: %v", c.out.Err())
	}
	return c.out.Text()
}

// expect reads lines until one starts with prefix and returns the rest.
func (c *child) expect(prefix string) string {
	c.t.Helper()
	for {
		l := c.line()
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return strings.TrimSpace(rest)
		}
		c.t.Logf("child: %s", l)
	}
}

// stop closes the passer and reaps the process (killing it if it lingers).
func (c *child) stop() {
	c.p.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// wait closes the passer and waits for a clean exit.
func (c *child) wait() {
	c.t.Helper()
	c.p.Close()
	io.Copy(io.Discard, c.rc)
	if err := c.cmd.Wait(); err != nil {
		c.t.Errorf("child: %v", err)
	}
}

// pipeWith returns the read end of a pipe holding content, write end closed.
func pipeWith(t testing.TB, content string) int {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(p[1], []byte(content)); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	return p[0]
}

// readFD reads everything from fd (a pipe read end) without closing it.
func readFD(fd int) (string, error) {
	var sb strings.Builder
	buf := make([]byte, 256)
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			sb.Write(buf[:n])
		}
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return sb.String(), err
		}
		if n == 0 {
			return sb.String(), nil
		}
	}
}

// deadline is a generous per-message deadline for tests.
func deadline() time.Time { return time.Now().Add(20 * time.Second) }

// inode identifies the open file behind fd.
func inode(t testing.TB, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat %d: %v", fd, err)
	}
	return st.Ino
}

func isCloexec(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && fl&unix.FD_CLOEXEC != 0
}
