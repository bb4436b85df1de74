package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/uds"
)

// chaosRequests sets how many requests TestRestartChaos verifies; the
// default keeps CI short. The long run: go test ./engine -run
// TestRestartChaos -chaos.requests 1000000 -timeout 30m
var chaosRequests = flag.Int("chaos.requests", 30_000, "requests TestRestartChaos verifies")

// Verified requests: "chk:" + sequence number (8 bytes) + reply size (4).
// The reply is the sequence number, the CRC-32 of the filler and the filler
// itself, whose bytes depend on the sequence number: a reply given to the
// wrong request cannot pass for the right one.
const chkPrefix = "chk:"

func chkRequest(buf []byte, seq uint64, size int) []byte {
	buf = append(buf[:0], chkPrefix...)
	buf = binary.BigEndian.AppendUint64(buf, seq)
	return binary.BigEndian.AppendUint32(buf, uint32(size))
}

func chkFill(p []byte, seq uint64) {
	for i := range p {
		p[i] = byte(seq) + byte(i*7)
	}
}

// verifiedEcho answers chk requests; it is gitDaemon otherwise.
func verifiedEcho(ctx context.Context, req []byte, w *ReplyWriter) error {
	if len(req) != len(chkPrefix)+12 || string(req[:len(chkPrefix)]) != chkPrefix {
		return gitDaemon(ctx, req, w)
	}
	seq := binary.BigEndian.Uint64(req[len(chkPrefix):])
	size := int(binary.BigEndian.Uint32(req[len(chkPrefix)+8:]))
	_, err := w.Write(chkBody(seq, size))
	return err
}

// chkBody is the reply to verified request seq of size.
func chkBody(seq uint64, size int) []byte {
	body := make([]byte, 12+size)
	chkFill(body[12:], seq)
	binary.BigEndian.PutUint64(body, seq)
	binary.BigEndian.PutUint32(body[8:], crc32.ChecksumIEEE(body[12:]))
	return body
}

// chkReply reports whether reply is the one for seq and size.
func chkReply(reply []byte, seq uint64, size int) bool {
	return len(reply) == 12+size && binary.BigEndian.Uint64(reply) == seq &&
		binary.BigEndian.Uint32(reply[8:]) == crc32.ChecksumIEEE(reply[12:]) &&
		(size == 0 || reply[12+size-1] == byte(seq)+byte((size-1)*7))
}

// TestReplyNeverCrossesRestart is the deterministic case: slowA, B and C are
// pipelined; the server is replaced while slowA is handled; slowA fails,
// and so must B and C, even though D, sent afterwards on a new connection,
// has a reply waiting when B's turn comes.
func TestReplyNeverCrossesRestart(t *testing.T) {
	for _, how := range []string{"close", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			leakcheck.Check(t)
			path := socketPath(t)
			inSlow := make(chan struct{}, 1)
			h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
				if string(req) == "slowA" {
					inSlow <- struct{}{}
					<-ctx.Done()
					return ctx.Err()
				}
				_, err := w.Write(append([]byte("re:"), req...))
				return err
			})
			first := serveAt(t, path, h, WithShutdownTimeout(50*time.Millisecond))
			c, err := Dial(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, r := range []string{"slowA", "B", "C"} {
				if err := c.Send([]byte(r)); err != nil {
					t.Fatal(err)
				}
			}
			<-inSlow
			if how == "close" {
				first.close(t)
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				_ = first.Shutdown(ctx) // times out: slowA never ends by itself
				cancel()
				first.close(t)
			}
			second := serveAt(t, path, h)
			defer second.close(t)

			if got, err := c.Recv(); !errors.Is(err, ErrIncompleteReply) {
				t.Fatalf("slowA: %q, %v; want ErrIncompleteReply", got, err)
			}
			if err := c.Send([]byte("D")); err != nil {
				t.Fatalf("D: %v", err)
			}
			if !c.Persistent() {
				t.Fatal("the new connection did not repeat the persistent handshake")
			}
			for _, r := range []string{"B", "C"} {
				got, err := c.Recv()
				if err == nil {
					t.Fatalf("%s: got %q as a success; its connection was gone", r, got)
				}
				if !errors.Is(err, ErrIncompleteReply) || errors.Is(err, ErrNotProcessed) {
					t.Fatalf("%s: %v; want ErrIncompleteReply (may have been processed)", r, err)
				}
			}
			if got, err := c.Recv(); err != nil || string(got) != "re:D" {
				t.Fatalf("D: %q, %v", got, err)
			}
			if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
				t.Fatalf("Recv with nothing pending: %v, want ErrNoRequest", err)
			}
			// Pipelining works on the new connection.
			for _, r := range []string{"E", "F"} {
				if err := c.Send([]byte(r)); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range []string{"E", "F"} {
				if got, err := c.Recv(); err != nil || string(got) != "re:"+r {
					t.Fatalf("%s: %q, %v", r, got, err)
				}
			}
			if n := second.Stats().Accepted; n != 1 {
				t.Fatalf("second server accepted %d connections, want 1 (persistent again)", n)
			}
		})
	}
}

// TestSendErrorsSayNotProcessed: a request that cannot be sent is reported
// as not processed, and leaves nothing for Recv.
func TestSendErrorsSayNotProcessed(t *testing.T) {
	leakcheck.Check(t)
	path := socketPath(t)
	srv := serveAt(t, path, HandlerFunc(verifiedEcho))
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.close(t)
	err = c.Send([]byte("ping"))
	var ce *ClientError
	if !errors.Is(err, ErrNotProcessed) || !errors.As(err, &ce) || ce.Op != "dial" {
		t.Fatalf("send with the server gone: %v", err)
	}
	if _, err := c.Recv(); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("Recv after a failed Send: %v", err)
	}
	if _, err := Send(context.Background(), path, []byte("ping")); !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("Send with the server gone: %v", err)
	}
	srv = serveAt(t, path, HandlerFunc(verifiedEcho))
	defer srv.close(t)
	if got, err := c.Call([]byte("ping")); err != nil || string(got) != "pong" || !c.Persistent() {
		t.Fatalf("after restart: %q, %v, persistent %v", got, err, c.Persistent())
	}
}

// servedAt is an in-process server on a path the test chooses, so that the
// test can replace it.
type servedAt struct {
	*Server
	errc chan error
	once sync.Once
}

func serveAt(t testing.TB, path string, h Handler, opts ...Option) *servedAt {
	t.Helper()
	s, err := NewServer(path, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sa := &servedAt{Server: s, errc: make(chan error, 1)}
	go func() { sa.errc <- s.Serve(context.Background()) }()
	t.Cleanup(func() { sa.close(t) })
	return sa
}

func (sa *servedAt) close(t testing.TB) {
	sa.once.Do(func() {
		_ = sa.Close()
		if err := <-sa.errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
}

// TestRestartChaos pipelines verified requests (windows of 1-64, replies of
// up to 1 MiB) from several clients, half of them over shared-memory rings,
// while the server is restarted at random
// moments in four ways: SIGKILL and SIGTERM of a server process, Close and
// Shutdown of an in-process one. No reply may be returned for the wrong
// request; every failure must say whether the request may have been
// processed.
func TestRestartChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("restart chaos is not short")
	}
	leakcheck.Check(t)
	path := socketPath(t)
	var (
		stop                   atomic.Bool
		verified, failed       atomic.Int64
		wrong, untyped, misuse atomic.Int64
	)
	restarts := map[string]int{}
	superDone := make(chan struct{})
	go func() {
		defer close(superDone)
		rng := rand.New(rand.NewPCG(1, 2))
		kinds := []string{"kill", "term", "close", "shutdown"}
		for i := 0; !stop.Load(); i++ {
			kind := kinds[i%len(kinds)]
			up := time.Duration(50+rng.IntN(250)) * time.Millisecond
			switch kind {
			case "kill", "term":
				ch, err := spawnChild(path)
				if err != nil {
					t.Errorf("restart: %v", err)
					stop.Store(true)
					return
				}
				time.Sleep(up)
				if kind == "kill" {
					_ = ch.cmd.Process.Kill()
				} else {
					_ = ch.cmd.Process.Signal(syscall.SIGTERM)
				}
				_ = ch.wait()
			default:
				s, err := NewServer(path, HandlerFunc(verifiedEcho), WithShutdownTimeout(20*time.Millisecond), WithRingLimits(16, 1<<16))
				if err != nil {
					t.Errorf("restart: %v", err)
					stop.Store(true)
					return
				}
				sa := &servedAt{Server: s, errc: make(chan error, 1)}
				go func() { sa.errc <- s.Serve(context.Background()) }()
				time.Sleep(up)
				if kind == "shutdown" {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
					_ = sa.Shutdown(ctx)
					cancel()
				}
				sa.close(t)
			}
			restarts[kind]++
		}
	}()

	const clients = 4
	var wg sync.WaitGroup
	defer func() { stop.Store(true); <-superDone }()
	for g := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			opts := []ClientOption{WithDialOptions(uds.WaitIfNotFound(), uds.WaitIfBusy())}
			if g%2 == 0 {
				opts = append(opts, WithRings(1<<16)) // requests of up to 1 MiB stream through
			}
			c, err := Dial(ctx, path, opts...)
			if err != nil {
				t.Errorf("client %d: %v", g, err)
				stop.Store(true)
				return
			}
			defer c.Close()
			seq := uint64(g) << 48
			var req []byte
			type sent struct {
				seq  uint64
				size int
			}
			var window []sent
			for verified.Load()+failed.Load() < int64(*chaosRequests) {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				window = window[:0]
				for range 1 + rng.IntN(64) {
					size := rng.IntN(512)
					if rng.IntN(100) == 0 {
						size = rng.IntN(1 << 20)
					}
					seq++
					req = chkRequest(req, seq, size)
					if err := c.Send(req); err != nil {
						failed.Add(1)
						if !errors.Is(err, ErrNotProcessed) {
							untyped.Add(1)
							t.Errorf("send error without ErrNotProcessed: %v", err)
						}
						continue
					}
					window = append(window, sent{seq, size})
				}
				for _, s := range window {
					reply, err := c.Recv()
					switch {
					case errors.Is(err, ErrNoRequest):
						misuse.Add(1)
					case err != nil:
						failed.Add(1)
						if !errors.Is(err, ErrIncompleteReply) {
							untyped.Add(1)
							t.Errorf("recv error without ErrIncompleteReply: %v", err)
						}
					case !chkReply(reply, s.seq, s.size):
						wrong.Add(1)
						t.Errorf("request %x got a reply of %d bytes for %x", s.seq, len(reply), binary.BigEndian.Uint64(reply))
					default:
						verified.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	<-superDone
	t.Logf("verified %d, failed %d (typed), restarts %v", verified.Load(), failed.Load(), restarts)
	if wrong.Load() != 0 || untyped.Load() != 0 || misuse.Load() != 0 {
		t.Fatalf("%d wrong replies, %d untyped errors, %d lost queue entries", wrong.Load(), untyped.Load(), misuse.Load())
	}
	if failed.Load() == 0 || verified.Load() < int64(*chaosRequests)/2 {
		t.Fatalf("verified %d, failed %d: the restarts did not hit requests in flight, or most requests failed", verified.Load(), failed.Load())
	}
}

// TestChaosVerifierRejects: the verifier tells a reply for another request
// apart, so the chaos test's zero cannot come from a check that passes
// anything.
func TestChaosVerifierRejects(t *testing.T) {
	if !chkReply(chkBody(7, 100), 7, 100) {
		t.Fatal("the right reply was rejected")
	}
	for _, bad := range [][]byte{chkBody(8, 100), chkBody(7, 99), chkBody(7, 101), chkBody(7, 0)} {
		if chkReply(bad, 7, 100) {
			t.Fatalf("a reply for another request passed: %d bytes", len(bad))
		}
	}
	r := chkBody(7, 100)
	r[50] ^= 1
	if chkReply(r, 7, 100) {
		t.Fatal("a corrupted reply passed")
	}
}
