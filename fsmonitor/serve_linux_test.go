package fsmonitor

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/uds"
)

// serve runs Serve on root in the background; the returned channel gives
// Serve's result.
func serve(t *testing.T, ctx context.Context, root string) (socket string, done chan error) {
	t.Helper()
	socket = filepath.Join(root, ".git", SocketName)
	done = make(chan error, 1)
	go func() {
		done <- Serve(ctx, Options{Worktree: root, CookieTimeout: 5 * time.Second, Logger: quiet}, "", engine.WithLogger(quiet))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := engine.Send(context.Background(), socket, []byte("builtin:fake")); err == nil {
			return socket, done
		}
		select {
		case err := <-done:
			t.Fatalf("Serve: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reply splits a reply as git's client does: the token up to the first
// NUL, then "/" (trivial) or the NUL-terminated paths.
func reply(t *testing.T, b []byte) (token string, paths []string, trivial bool) {
	t.Helper()
	tok, rest, ok := bytes.Cut(b, []byte{0})
	if !ok || !bytes.HasPrefix(tok, []byte(builtinPrefix)) {
		t.Fatalf("reply %q has no token", b)
	}
	if string(rest) == "/\x00" {
		return string(tok), nil, true
	}
	if len(rest) > 0 {
		if rest[len(rest)-1] != 0 {
			t.Fatalf("reply %q: paths not NUL-terminated", b)
		}
		paths = strings.Split(string(rest[:len(rest)-1]), "\x00")
	}
	return string(tok), paths, false
}

func send(t *testing.T, socket, req string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := engine.Send(ctx, socket, []byte(req))
	if err != nil {
		t.Fatalf("send %q: %v", req, err)
	}
	return b
}

func TestServe(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	socket, done := serve(t, context.Background(), root)

	tok, _, trivial := reply(t, send(t, socket, "builtin:fake"))
	if !trivial {
		t.Fatal("builtin:fake got a complete reply")
	}
	if _, _, trivial := reply(t, send(t, socket, "1795422795148292482")); !trivial {
		t.Fatal("a V1 timestamp got a complete reply")
	}
	write(t, root, "x/y.txt", "1")
	tok2, paths, trivial := reply(t, send(t, socket, tok))
	if trivial || !slices.Contains(paths, "x/") || !slices.Contains(paths, "x/y.txt") {
		t.Fatalf("reply to %s: %q (trivial %v)", tok, paths, trivial)
	}
	if tok2 == tok {
		t.Fatal("the sequence number did not advance")
	}

	ftok, _, trivial := reply(t, send(t, socket, "flush"))
	if !trivial || ftok[:len(builtinPrefix)+2] == tok2[:len(builtinPrefix)+2] {
		t.Fatalf("flush: token %s after %s, trivial %v: want a new token and a trivial reply", ftok, tok2, trivial)
	}
	if _, _, trivial := reply(t, send(t, socket, tok2)); !trivial {
		t.Fatal("a token from before the flush got a complete reply")
	}

	if b := send(t, socket, "quit"); len(b) != 0 {
		t.Fatalf("quit replied %q, want nothing (just the flush packet)", b)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after quit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after quit")
	}
}

// TestServeRestart: a token of a daemon that was restarted gets a trivial
// reply (with the new daemon's token), never the new daemon's changes.
// TestServeWorktreeGone: Serve ends with ErrGone once the worktree, or
// its git directory, is removed: nothing is left to watch.
func TestServeWorktreeGone(t *testing.T) {
	leakcheck.Check(t)
	for _, gone := range []string{"worktree", "git directory"} {
		root := worktree(t)
		gitDir := filepath.Join(t.TempDir(), "git") // the socket's home survives the worktree
		if err := os.Mkdir(gitDir, 0o700); err != nil {
			t.Fatal(err)
		}
		socket := filepath.Join(t.TempDir(), "s")
		done := make(chan error, 1)
		go func() {
			done <- Serve(context.Background(), Options{Worktree: root, GitDir: gitDir, Logger: quiet}, socket, engine.WithLogger(quiet))
		}()
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			if _, err := engine.Send(context.Background(), socket, []byte("builtin:fake")); err == nil {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s: the daemon never answered", gone)
			}
		}
		victim := root
		if gone == "git directory" {
			victim = gitDir
		}
		if err := os.RemoveAll(victim); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, ErrGone) {
				t.Fatalf("%s removed: Serve = %v, want ErrGone", gone, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s removed: Serve still running after 10 s", gone)
		}
	}
}

func TestServeRestart(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	socket, done := serve(t, context.Background(), root)
	tok, _, _ := reply(t, send(t, socket, "builtin:fake"))
	send(t, socket, "quit")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	write(t, root, "while-down.txt", "x")
	ctx, cancel := context.WithCancel(context.Background())
	socket, done = serve(t, ctx, root)
	tok2, _, trivial := reply(t, send(t, socket, tok))
	if !trivial || tok2 == tok {
		t.Fatalf("the old daemon's token %s got trivial=%v, token %s", tok, trivial, tok2)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve after its context ended: %v", err)
	}
}

// TestClientGoneBeforeCookie: a client that sends a query and closes
// while the query waits for its cookie ends the query (its context is
// cancelled: the server notices the hang-up), costs nothing lasting, and
// the daemon answers the next one.
func TestClientGoneBeforeCookie(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	m := start(t, root, time.Minute)
	socket := filepath.Join(root, ".git", SocketName)
	srv, err := engine.NewServer(socket, m, engine.WithLogger(quiet), engine.WithListenOptions(uds.WithInsecureDir()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	defer func() {
		srv.Close()
		<-done
	}()
	tok, _, _ := reply(t, send(t, socket, "builtin:fake"))

	m.w.mu.Lock() // the cookie waits
	c, err := net.Dial("unix", socket)
	if err != nil {
		m.w.mu.Unlock()
		t.Fatal(err)
	}
	req, _ := frame.AppendPacket(nil, []byte(tok))
	c.Write(frame.AppendFlush(req))
	for m.queries.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	// The cookie cannot be seen, and its timeout is a minute away: only
	// the hang-up can end the query.
	for start := time.Now(); m.trivial.Load() < 2; {
		if time.Since(start) > 10*time.Second {
			m.w.mu.Unlock()
			t.Fatal("the query of a client that hung up still waits for its cookie")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.w.mu.Unlock()

	write(t, root, "after.txt", "x")
	_, paths, trivial := reply(t, send(t, socket, tok))
	if trivial || !slices.Contains(paths, "after.txt") {
		t.Fatalf("the next query: %q, trivial %v", paths, trivial)
	}
	// The abandoned query puts its cookie file back for the next one: a
	// second file would mean it kept its own.
	for range 200 {
		if entries, _ := os.ReadDir(m.cookieDir); len(entries) <= 1 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the abandoned query's cookie was left behind")
}

// TestServeStolenSocket: when another process takes the socket path,
// Serve stops and says so.
func TestServeStolenSocket(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	socket, done := serve(t, context.Background(), root)
	if err := os.Remove(socket); err != nil {
		t.Fatal(err)
	}
	thief, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer thief.Close()
	select {
	case err := <-done:
		if !errors.Is(err, engine.ErrSocketStolen) {
			t.Fatalf("Serve: %v, want ErrSocketStolen", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not notice the theft")
	}
}
