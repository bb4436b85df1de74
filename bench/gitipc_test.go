package bench

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

// pkt is one pkt-line data packet, computed by hand (lowercase hex, as git
// writes).
func pkt(payload string) string { return fmt.Sprintf("%04x", len(payload)+4) + payload }

// shortDir returns a fresh private directory with a short path for sockets.
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startGitDaemon runs the test daemon in this process on a fresh path and
// stops it at cleanup. done is closed when it returned; *errp is its
// result then.
func startGitDaemon(t *testing.T, threads int) (path string, done <-chan struct{}, errp *error) {
	t.Helper()
	path = filepath.Join(shortDir(t), "ipc-test")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	finished := make(chan struct{})
	var err error
	go func() {
		defer close(finished)
		err = serveGitDaemon(ctx, path, threads, func() { close(ready) })
	}()
	select {
	case <-ready:
	case <-finished:
		cancel()
		t.Fatalf("daemon did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return path, finished, &err
}

// exchange sends raw bytes on a new connection and returns everything the
// server sends until it closes.
func exchange(t *testing.T, path, req string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("request %q: %v after %d bytes", req, err, len(b))
	}
	return string(b)
}

func bigRows(n int) string {
	var sb strings.Builder
	for row := range n {
		fmt.Fprintf(&sb, "big: %s%d\n", strings.Repeat("0", 75-len(fmt.Sprint(row))), row)
	}
	return sb.String()
}

// TestGitDaemonWire checks the test daemon's replies byte for byte against
// git's (simple-ipc.md §2, §5 and §9).
func TestGitDaemonWire(t *testing.T) {
	leakcheck.Check(t)
	path, _, _ := startGitDaemon(t, 2)

	for _, tc := range []struct{ name, req, want string }{
		{"ping", "0008ping0000", "0008pong0000"},
		{"uppercase hex", "000Apingxx0000", "001dunhandled command: pingxx0000"},
		{"empty request", "0000", "0017unhandled command: 0000"},
		{"delim ends", "0008ping0001", "0008pong0000"},
		{"response-end ends", "0008ping0002", "0008pong0000"},
		{"split packets", "0006pi0006ng0000", "0008pong0000"},
		{"NUL cuts the echo", "0009ping\x000000", pkt("unhandled command: ping") + "0000"},
		{"longer than ping", "0009pings0000", pkt("unhandled command: pings") + "0000"},
		{"no-command", pkt("(no-command)") + "0000", pkt("unhandled command: (no-command)") + "0000"},
		{"sendbytes without space", pkt("sendbytes") + "0000", pkt("unhandled command: sendbytes") + "0000"},
		{"sendbytes", pkt("sendbytes AAAA") + "0000", "0013rcvd:A00000004\n0000"},
		{"sendbytes stops at NUL", pkt("sendbytes AAAA\x00B") + "0000", "0013rcvd:A00000004\n0000"},
		{"sendbytes empty ballast", pkt("sendbytes ") + "0000", "0013rcvd:\x0000000000\n0000"},
		{"sendbytes crossed", pkt("sendbytes ABBA") + "0000", "000berrs:2\n0000"},
	} {
		if got := exchange(t, path, tc.req); got != tc.want {
			t.Errorf("%s: %q -> %q, want %q", tc.name, tc.req, got, tc.want)
		}
	}

	// 100,000 x A: 100,010 payload bytes in two packets (fff0 + 65516,
	// 86c2 + 34494), as git's client sends them.
	ballast := "sendbytes " + strings.Repeat("A", 100000)
	req := "fff0" + ballast[:65516] + "86c2" + ballast[65516:] + "0000"
	if got, want := exchange(t, path, req), "0013rcvd:A00100000\n0000"; got != want {
		t.Errorf("sendbytes 100000: %q, want %q", got, want)
	}

	rows := bigRows(gitBigRows)
	if len(rows) != 810000 {
		t.Fatalf("rows: %d bytes", len(rows))
	}
	// big: one write of 810,000 bytes: 12 full packets, one of 23,808
	// payload bytes (5d04), the flush.
	big := exchange(t, path, "0007big0000")
	if len(big) != 810056 {
		t.Errorf("big: %d bytes on the wire, want 810056", len(big))
	}
	var want strings.Builder
	for off := 0; off < len(rows); off += 65516 {
		want.WriteString(pkt(rows[off:min(off+65516, len(rows))]))
	}
	want.WriteString("0000")
	if big != want.String() {
		t.Errorf("big reply differs from git's (%d bytes)", len(big))
	}
	if !strings.Contains(big[12*65520:12*65520+4], "5d04") {
		t.Errorf("big: 13th packet header %q, want 5d04", big[12*65520:12*65520+4])
	}
	// chunk: the same lines, one packet each.
	chunk := exchange(t, path, "0009chunk0000")
	if len(chunk) != 850004 {
		t.Errorf("chunk: %d bytes on the wire, want 850004", len(chunk))
	}
	want.Reset()
	for off := 0; off < len(rows); off += gitRowLen {
		want.WriteString("0055" + rows[off:off+gitRowLen])
	}
	want.WriteString("0000")
	if chunk != want.String() {
		t.Errorf("chunk reply differs from git's")
	}
}

func TestGitDaemonQuit(t *testing.T) {
	leakcheck.Check(t)
	path, done, errp := startGitDaemon(t, 1)
	if got := exchange(t, path, "0008quit0000"); got != "0000" {
		t.Errorf("quit: %q, want the terminator alone", got)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("daemon still running 30 s after quit")
	}
	if *errp != nil {
		t.Errorf("daemon after quit: %v", *errp)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after quit: %v", err)
	}
}

// A client that leaves during slow ends the handler: it honours its
// context instead of sleeping through its 1,000 rows.
func TestGitDaemonSlowStopsWithClient(t *testing.T) {
	leakcheck.Check(t)
	path, done, _ := startGitDaemon(t, 1)
	start := time.Now()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "0008slow0000"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	c.Close()
	// Quit must wait for the one worker, which is busy with slow.
	if got := exchange(t, path, "0008quit0000"); got != "0000" {
		t.Errorf("quit: %q", got)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("daemon did not stop")
	}
	// The rows alone sleep 1,000 x 10 ms: finishing well before that means
	// the handler was interrupted.
	if d := time.Since(start); d >= gitSlowRows*gitSlowDelay*9/10 {
		t.Errorf("slow ran %v after its client left", d)
	}
}

func newTool(path string) (*GitTool, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	o := DefaultGitToolOptions()
	o.Name = path
	return &GitTool{Options: o, Stdout: &out, Stderr: &errb}, &out, &errb
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

// TestGitToolT0052 replays git's t0052 against the test daemon with the
// test client.
func TestGitToolT0052(t *testing.T) {
	leakcheck.Check(t)
	path, done, _ := startGitDaemon(t, 8)
	ctx := context.Background()
	g, out, errb := newTool(path)

	check(t, "is-active", g.IsActive(), out, errb, 0, "", "")
	g.Options.Token = "ping"
	check(t, "send ping", g.Send(ctx), out, errb, 0, "pong\n", "")

	// A second server on the same path fails; the first stays active.
	second, out2, err2 := newTool(path)
	check(t, "second run-daemon", second.RunDaemon(ctx), out2, err2, 1, "", "error: socket/pipe already in use: '"+path+"'\n")
	check(t, "is-active after second", g.IsActive(), out, errb, 0, "", "")

	rows := bigRows(gitBigRows)
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

	check(t, "stop-daemon", g.StopDaemon(ctx), out, errb, 0, "", "")
	<-done
	check(t, "is-active after stop", g.IsActive(), out, errb, 1, "", "error: no server listening at '"+path+"'\n")
	g.Options.Token = "ping"
	check(t, "send after stop", g.Send(ctx), out, errb, 1, "", "error: no server listening at '"+path+"'\n")
}

func TestGitToolProbeMessages(t *testing.T) {
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveConns(ctx, l, func(c net.Conn) {
			if _, err := frame.NewReader(c, frame.SimpleIPC, 0).ReadMessage(); err != nil {
				return
			}
			io.WriteString(c, reply)
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return path
}

// TestGitToolBadReplies: what git's client prints for broken servers
// (simple-ipc.md §3, §4).
func TestGitToolBadReplies(t *testing.T) {
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

func TestGitToolOptionClamps(t *testing.T) {
	o := GitToolOptions{Threads: -3, MaxWait: -time.Second, Bytecount: 0, Batchsize: -1}.clamped()
	if o.Threads != 1 || o.MaxWait != 0 || o.Bytecount != 1 || o.Batchsize != 1 {
		t.Errorf("clamped: %+v", o)
	}
	d := DefaultGitToolOptions()
	if d.Name != "ipc-test" || d.Threads != 5 || d.MaxWait != time.Minute || d.Bytecount != 1024 || d.Batchsize != 10 || d.Byte != 'x' || d.Token != "" {
		t.Errorf("defaults: %+v", d)
	}
}

func TestGitSendbytesReply(t *testing.T) {
	for _, tc := range []struct{ ballast, want string }{
		{"x", "rcvd:x00000001\n"},
		{"", "rcvd:\x0000000000\n"},
		{"\x00abc", "rcvd:\x0000000000\n"},
		{"abab", "errs:2\n"},
	} {
		if got := string(gitSendbytesReply(nil, []byte(tc.ballast))); got != tc.want {
			t.Errorf("ballast of %d bytes: %q, want %q", len(tc.ballast), got, tc.want)
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

func TestRunGitSubcommandUnknown(t *testing.T) {
	g, _, _ := newTool("x")
	if _, err := g.RunGitSubcommand(context.Background(), "frobnicate", nil); !errors.Is(err, ErrUnknownGitSubcommand) {
		t.Errorf("unknown subcommand: %v", err)
	}
	if _, err := g.RunGitSubcommand(context.Background(), "start-daemon", nil); !errors.Is(err, ErrUnknownGitSubcommand) {
		t.Errorf("start-daemon without a daemon command: %v", err)
	}
}
