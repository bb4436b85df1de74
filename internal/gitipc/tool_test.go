package gitipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

func newTool(path string) (*Tool, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	o := DefaultOptions()
	o.Name = path
	return &Tool{Options: o, Stdout: &out, Stderr: &errb}, &out, &errb
}

// check runs a command of g and compares its status and outputs, then
// resets the buffers.
func check(t *testing.T, what string, code int, out, errb *bytes.Buffer, wantCode int, wantOut, wantErr string) {
	t.Helper()
	if code != wantCode || out.String() != wantOut || errb.String() != wantErr {
		t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d, %q, %q", what, code, out, errb, wantCode, wantOut, wantErr)
	}
	out.Reset()
	errb.Reset()
}

// TestToolT0052 replays git's t0052 against the test daemon with the
// test client.
func TestToolT0052(t *testing.T) {
	leakcheck.Check(t)
	path, done, _ := startDaemon(t, 8)
	ctx := context.Background()
	g, out, errb := newTool(path)

	check(t, "is-active", g.IsActive(), out, errb, 0, "", "")
	g.Options.Token = "ping"
	check(t, "send ping", g.Send(ctx), out, errb, 0, "pong\n", "")

	// A second server on the same path fails; the first stays active.
	second, out2, err2 := newTool(path)
	check(t, "second run-daemon", second.RunDaemon(ctx), out2, err2, 1, "", "error: socket/pipe already in use: '"+path+"'\n")
	check(t, "is-active after second", g.IsActive(), out, errb, 0, "", "")

	rows := rowsOfBig(bigRows)
	g.Options.Token = "big"
	check(t, "send big", g.Send(ctx), out, errb, 0, rows+"\n", "")
	g.Options.Token = "chunk"
	check(t, "send chunk", g.Send(ctx), out, errb, 0, rows+"\n", "")
	g.Options.Token = ""
	check(t, "send without token", g.Send(ctx), out, errb, 0, "unhandled command: (no-command)\n", "")
	g.Options.Token = "sendbytes "
	check(t, "send prints a C string", g.Send(ctx), out, errb, 0, "rcvd:\n", "")

	g.Options.Bytecount, g.Options.Byte = 100000, 'A'
	check(t, "sendbytes", g.Sendbytes(ctx), out, errb, 0, "sent:A00100000 rcvd:A00100000\n", "")

	checkMultiple(t, g, out, errb)

	check(t, "stop-daemon", g.StopDaemon(ctx), out, errb, 0, "", "")
	<-done
	check(t, "is-active after stop", g.IsActive(), out, errb, 1, "", "error: no server listening at '"+path+"'\n")
	g.Options.Token = "ping"
	check(t, "send after stop", g.Send(ctx), out, errb, 1, "", "error: no server listening at '"+path+"'\n")
}

// checkMultiple runs multiple twice: seven threads, whose lines and sizes
// must be git's, and 27, whose last thread reuses A with larger sizes.
func checkMultiple(t *testing.T, g *Tool, out, errb *bytes.Buffer) {
	t.Helper()
	ctx := context.Background()
	g.Options.Threads, g.Options.Bytecount, g.Options.Batchsize = 7, 19, 13
	code := g.Multiple(ctx)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if code != 0 || len(lines) != 92 || lines[91] != "client (good 91) (join 0), (errors 0)" || errb.Len() != 0 {
		t.Errorf("multiple: exit %d, %d lines, last %q, stderr %q", code, len(lines), lines[len(lines)-1], errb)
	}
	var sizesA []string
	line := regexp.MustCompile(`^sent:([A-G])(\d{8}) rcvd:([A-G])(\d{8})$`)
	for _, l := range lines[:91] {
		m := line.FindStringSubmatch(l)
		if m == nil || m[1] != m[3] || m[2] != m[4] {
			t.Errorf("multiple: line %q", l)
			continue
		}
		if m[1] == "A" {
			sizesA = append(sizesA, m[2])
		}
	}
	var wantA []string
	for n := 19; n <= 31; n++ {
		wantA = append(wantA, fmt.Sprintf("%08d", n))
	}
	if strings.Join(sizesA, ",") != strings.Join(wantA, ",") {
		t.Errorf("thread A sizes %v, want %v in order", sizesA, wantA)
	}
	out.Reset()

	// Threads beyond 26 reuse letters with larger sizes.
	g.Options.Threads, g.Options.Bytecount, g.Options.Batchsize = 27, 5, 2
	if code := g.Multiple(ctx); code != 0 {
		t.Errorf("multiple 27: exit %d, %s", code, errb)
	}
	var a []string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "sent:A") {
			a = append(a, l)
		}
	}
	if len(a) != 4 || !strings.Contains(out.String(), "sent:A00000008 rcvd:A00000008\n") || !strings.Contains(out.String(), "(good 54)") {
		t.Errorf("multiple 27: A lines %q", a)
	}
	out.Reset()

}

func TestToolProbeMessages(t *testing.T) {
	leakcheck.Check(t)
	dir := shortDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, "dead")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "error: no server listening at '%s'\n"},
		{filepath.Join(file, "below-a-file"), "error: no server listening at '%s'\n"},
		{dead, "error: no server listening at '%s'\n"},
		{file, "error: invalid pipe/socket name '%s'\n"},
		{dir, "error: invalid pipe/socket name '%s'\n"},
	} {
		g, out, errb := newTool(tc.path)
		check(t, "is-active "+tc.path, g.IsActive(), out, errb, 1, "", fmt.Sprintf(tc.want, tc.path))
		g.Options.Bytecount = 3
		check(t, "sendbytes "+tc.path, g.Sendbytes(context.Background()), out, errb, 1, "", fmt.Sprintf(tc.want, tc.path))
	}
}

// scriptedServer answers every request with reply (raw bytes) and closes;
// probe connections, which send nothing, are just closed.
func scriptedServer(t *testing.T, reply string) string {
	t.Helper()
	path := filepath.Join(shortDir(t), "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	// One connection at a time: each client sends its request at once, and
	// a probe connection, which sends nothing, ends with EOF.
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if _, err := frame.NewReader(c, frame.SimpleIPC, 0).ReadMessage(); err == nil {
				io.WriteString(c, reply)
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return path
}

// TestToolBadReplies: what git's client prints for broken servers
// (truncated replies, bad packet headers, oversized lengths).
func TestToolBadReplies(t *testing.T) {
	leakcheck.Check(t)
	const fail = "error: could not read IPC response\nerror: failed to send 'ping' to '%s'\n"
	for _, tc := range []struct {
		reply, out, err string
		code            int
	}{
		{"0008pong0000", "pong\n", "", 0},
		{"0000", "", "", 0},
		{"0008pong0004more", "pong\n", "", 0},
		{"0005p0005o0005n0005g0000", "pong\n", "", 0},
		{"000Apong!!0000", "pong!!\n", "", 0},
		{"0009\x00pong0000", "\n", "", 0},
		{"0008pong", "", fail, 1},
		{"", "", fail, 1},
		{"zzzz", "", "error: protocol error: bad line length character: zzzz\n" + fail, 1},
		{"0003", "", "error: protocol error: bad line length 3\n" + fail, 1},
		{"fff1", "", "error: protocol error: bad line length 65517\n" + fail, 1},
	} {
		path := scriptedServer(t, tc.reply)
		g, out, errb := newTool(path)
		g.Options.Token = "ping"
		want := tc.err
		if strings.Contains(want, "%s") {
			want = fmt.Sprintf(want, path)
		}
		check(t, fmt.Sprintf("reply %q", tc.reply), g.Send(context.Background()), out, errb, tc.code, tc.out, want)
	}
	path := scriptedServer(t, "0008pong")
	g, out, errb := newTool(path)
	g.Options.Bytecount, g.Options.Byte = 2, 0xe9
	check(t, "sendbytes", g.Sendbytes(context.Background()), out, errb, 1, "",
		"error: could not read IPC response\nerror: client failed to sendbytes(2, '\xe9') to '"+path+"'\n")
}

func TestOptionClamps(t *testing.T) {
	o := Options{Threads: -3, MaxWait: -time.Second, Bytecount: 0, Batchsize: -1}.clamped()
	if o.Threads != 1 || o.MaxWait != 0 || o.Bytecount != 1 || o.Batchsize != 1 {
		t.Errorf("clamped: %+v", o)
	}
	d := DefaultOptions()
	if d.Name != "ipc-test" || d.Threads != 5 || d.MaxWait != time.Minute || d.Bytecount != 1024 || d.Batchsize != 10 || d.Byte != 'x' || d.Token != "" {
		t.Errorf("defaults: %+v", d)
	}
}

func TestSendbytesReply(t *testing.T) {
	for _, tc := range []struct{ ballast, want string }{
		{"x", "rcvd:x00000001\n"},
		{"", "rcvd:\x0000000000\n"},
		{"\x00abc", "rcvd:\x0000000000\n"},
		{"abab", "errs:2\n"},
	} {
		if got := string(SendbytesReply(nil, []byte(tc.ballast))); got != tc.want {
			t.Errorf("ballast of %d bytes: %q, want %q", len(tc.ballast), got, tc.want)
		}
	}
}

// TestRtrim: the reply's trailing white space is git's (isspace in git's
// own ctype table), not C's: a vertical tab or form feed stays.
func TestRtrim(t *testing.T) {
	for in, want := range map[string]string{
		"rcvd:A00000004\n":      "rcvd:A00000004",
		"rcvd:A00000004 \t\r\n": "rcvd:A00000004",
		"rcvd:A00000004\v":      "rcvd:A00000004\v",
		"rcvd:A00000004\f\n":    "rcvd:A00000004\f",
		"":                      "",
	} {
		if got := string(rtrim([]byte(in))); got != want {
			t.Errorf("rtrim(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAppendZeroPadded(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "00000000"}, {7, "00000007"}, {100000, "00100000"}, {12345678, "12345678"}, {123456789, "123456789"}} {
		if got := string(appendZeroPadded([]byte("x"), tc.n, 8)); got != "x"+tc.want {
			t.Errorf("%d: %q, want x%s", tc.n, got, tc.want)
		}
	}
}

func TestRunUnknown(t *testing.T) {
	g, _, _ := newTool("x")
	if _, err := g.Run(context.Background(), "frobnicate", nil); !errors.Is(err, ErrUnknownSubcommand) {
		t.Errorf("unknown subcommand: %v", err)
	}
	if _, err := g.Run(context.Background(), "start-daemon", nil); !errors.Is(err, ErrUnknownSubcommand) {
		t.Errorf("start-daemon without a daemon command: %v", err)
	}
}
