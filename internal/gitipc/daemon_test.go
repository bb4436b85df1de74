package gitipc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// startDaemon runs the test daemon in this process on a fresh path and
// stops it at cleanup. done is closed when it returned; *errp is its
// result then.
func startDaemon(t *testing.T, threads int) (path string, done <-chan struct{}, errp *error) {
	t.Helper()
	path = filepath.Join(shortDir(t), "ipc-test")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	finished := make(chan struct{})
	var err error
	go func() {
		defer close(finished)
		err = Serve(ctx, path, threads, func() { close(ready) })
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

func rowsOfBig(n int) string {
	var sb strings.Builder
	for row := range n {
		fmt.Fprintf(&sb, "big: %s%d\n", strings.Repeat("0", 75-len(fmt.Sprint(row))), row)
	}
	return sb.String()
}

// TestDaemonWire checks the test daemon's replies byte for byte against
// git's: pkt-line framing and git's canned answers, one reply per connection.
func TestDaemonWire(t *testing.T) {
	leakcheck.Check(t)
	path, _, _ := startDaemon(t, 2)

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
}

// TestDaemonBigAndChunk: the 10,000 lines of big in git's packets, and of
// chunk one packet a line.
func TestDaemonBigAndChunk(t *testing.T) {
	leakcheck.Check(t)
	path, _, _ := startDaemon(t, 2)
	rows := rowsOfBig(bigRows)
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
	for off := 0; off < len(rows); off += rowLen {
		want.WriteString("0055" + rows[off:off+rowLen])
	}
	want.WriteString("0000")
	if chunk != want.String() {
		t.Errorf("chunk reply differs from git's")
	}
}

func TestDaemonQuit(t *testing.T) {
	leakcheck.Check(t)
	path, done, errp := startDaemon(t, 1)
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
func TestDaemonSlowStopsWithClient(t *testing.T) {
	leakcheck.Check(t)
	path, done, _ := startDaemon(t, 1)
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
	if d := time.Since(start); d >= slowRows*slowDelay*9/10 {
		t.Errorf("slow ran %v after its client left", d)
	}
}
