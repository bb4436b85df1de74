//go:build linux

package events

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/uds"
)

// A silent client, one stuck in the middle of a frame, and one announcing
// an oversized frame hold up nobody; the oversized one is cut off at its
// header, the partial one reported truncated when it leaves.
func TestFaultyPeers(t *testing.T) {
	ctx := checked(t)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			l := newTestLoop(t, WithMaxMessageSize(1000))
			_, silent := pair(t, l, f)
			partialID, partial := pair(t, l, f)
			bigID, big := pair(t, l, f)
			goodID, good := pair(t, l, f)
			_ = silent
			frame := enc(t, f, 0, []byte("0123456789"))
			writeAll(t, partial, frame[:len(frame)-3])
			var hdr []byte
			switch f {
			case LibIPC:
				hdr = []byte{0, 0, 0x10, 0}
			case LibIPCC:
				hdr = []byte{2, 0, 0, 0x10, 0, 0}
			default:
				// 1,001 bytes in pkt-lines of 1,000 and 1, then more.
				hdr = append(enc(t, f, 0, make([]byte, 1000))[:1004], "0005x"...)
			}
			writeAll(t, big, hdr)
			writeAll(t, good, enc(t, f, 0, []byte("ok")))
			got := map[ConnID]Event{}
			for len(got) < 2 {
				ev := next(t, ctx, l)
				got[ev.Conn] = ev
			}
			if ev := got[goodID]; ev.Kind != MessageRx || string(ev.Data) != "ok" {
				t.Fatalf("good: %+v", ev)
			}
			ev := got[bigID]
			var se *SizeError
			if ev.Kind != Disconnection || !errors.Is(ev.Err, ErrTooLarge) || !errors.As(ev.Err, &se) {
				t.Fatalf("oversized: %v %v", ev.Kind, ev.Err)
			}
			// The oversized peer was cut off: its socket sees the end.
			var b [1]byte
			unix.SetsockoptTimeval(big, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
			if n, _ := unix.Read(big, b[:]); n != 0 {
				t.Fatal("oversized peer still connected")
			}
			unix.Shutdown(partial, unix.SHUT_WR)
			ev = expect(t, ctx, l, Disconnection, partialID)
			if !errors.Is(ev.Err, ErrTruncated) {
				t.Fatalf("partial: %v", ev.Err)
			}
			quiet(t, l, 20*time.Millisecond)
		})
	}
}

// A peer that stops reading under Schedule: the queue stops at its bound
// with ErrQueueFull, memory stays bounded, and Write times out.
func TestPeerStopsReading(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t, WithQueueLimit(1<<20, 256<<10), WithWriteTimeout(50*time.Millisecond))
	id, peer := pair(t, l, LibIPC)
	msg := make([]byte, 1000)
	n := 0
	var err error
	for ; n < 100000; n++ {
		if err = l.Schedule(id, msg); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("after %d: %v", n, err)
	}
	// The socket's buffers plus the 256 KiB queue: far fewer than 100,000.
	if n > 2000 {
		t.Fatalf("%d messages accepted: the queue is not bounded", n)
	}
	if err := l.Write(id, msg); !errors.Is(err, ErrWriteTimeout) {
		t.Fatalf("Write to a full peer: %v", err)
	}
	// The peer reads again: everything queued arrives, reported in order.
	read := make(chan int, 1)
	go func() {
		buf := make([]byte, 64<<10)
		total, want := 0, n*(4+len(msg))
		for total < want {
			m, err := unix.Read(peer, buf)
			if err != nil || m == 0 {
				break
			}
			total += m
		}
		read <- total
	}()
	for i := 0; i < n; i++ {
		if ev := expect(t, ctx, l, MessageTx, id); ev.Err != nil {
			t.Fatal(ev.Err)
		}
	}
	if got := <-read; got != n*(4+len(msg)) {
		t.Fatalf("peer read %d bytes, want %d", got, n*(4+len(msg)))
	}
}

// At the connection cap a service stops accepting; the waiting client is
// accepted once a connection ends.
func TestConnectionCap(t *testing.T) {
	ctx := checked(t)
	dir := filepath.Join(t.TempDir(), "run")
	srv := newTestLoop(t, WithRunDir(dir), WithMaxConns(2))
	cli := newTestLoop(t, WithRunDir(dir))
	if _, err := srv.Listen("capped", PktLine); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := cli.Connect(ctx, "capped", PktLine); err != nil {
			t.Fatal(err)
		}
	}
	first := expect(t, ctx, srv, Connection, 0)
	expect(t, ctx, srv, Connection, 0)
	quiet(t, srv, 30*time.Millisecond)
	if err := srv.CloseConn(first.Conn); err != nil {
		t.Fatal(err)
	}
	expect(t, ctx, srv, Connection, 0)
	if s := srv.Stats(); s.Conns != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// Descriptor exhaustion: accept fails with EMFILE; the Loop reports it
// once as an Error, does not spin, and accepts the client once a
// descriptor is free.
func TestDescriptorExhaustion(t *testing.T) {
	ctx := checked(t)
	dir := filepath.Join(t.TempDir(), "run")
	srv := newTestLoop(t, WithRunDir(dir))
	ln, err := srv.Listen("full", PktLine)
	if err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// A client's socket made before the limit drops, connected after.
	cfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cfd)
	// Fill the table up to a lowered limit.
	low := lim
	low.Cur = uint64(leakcheck.CountFDs() + 4)
	var hold []int
	defer func() {
		for _, fd := range hold {
			unix.Close(fd)
		}
	}()
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		hold = append(hold, fd)
	}
	if err := unix.Connect(cfd, &unix.SockaddrUnix{Name: filepath.Join(dir, "full")}); err != nil {
		t.Fatal(err)
	}
	ev := expect(t, ctx, srv, Error, ln)
	if !errors.Is(ev.Err, syscall.EMFILE) {
		t.Fatalf("cause %v", ev.Err)
	}
	// While the table is full: no event storm (one report per episode).
	quiet(t, srv, 150*time.Millisecond)
	for _, fd := range hold {
		unix.Close(fd)
	}
	hold = nil
	unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	expect(t, ctx, srv, Connection, 0)
}

// IDs are never reused, and a stale ID reaches nothing.
func TestIDsNotReused(t *testing.T) {
	checked(t)
	l := newTestLoop(t)
	seen := map[ConnID]bool{}
	var last ConnID
	for i := 0; i < 50; i++ {
		id, _ := pair(t, l, PktLine)
		if seen[id] {
			t.Fatalf("ID %d reused", id)
		}
		seen[id] = true
		if last != 0 {
			if err := l.Write(last, []byte("x")); !errors.Is(err, ErrUnknownConn) {
				t.Fatalf("stale ID: %v", err)
			}
		}
		l.CloseConn(id)
		last = id
	}
}

// Many clients, each with one request in flight: all served, none waits
// far longer than the others.
func TestManyClientsFair(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	const n = 200
	ids := make([]ConnID, n)
	peers := make([]int, n)
	for i := range ids {
		ids[i], peers[i] = pair(t, l, LibIPC)
	}
	for round := 0; round < 5; round++ {
		for i := range peers {
			writeAll(t, peers[i], enc(t, LibIPC, 0, []byte{byte(i)}))
		}
		pos := map[ConnID]int{}
		for k := 0; k < n; k++ {
			ev := expect(t, ctx, l, MessageRx, 0)
			if _, dup := pos[ev.Conn]; dup {
				t.Fatalf("round %d: connection %d served twice before others", round, ev.Conn)
			}
			pos[ev.Conn] = k
		}
	}
}

// A service whose socket is taken over is reported as an Error naming it.
func TestStolenService(t *testing.T) {
	ctx := checked(t)
	dir := filepath.Join(t.TempDir(), "run")
	l := newTestLoop(t, WithRunDir(dir), WithListenOptions(uds.WithWatchInterval(10*time.Millisecond)))
	ln, err := l.Listen("svc", PktLine)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "svc")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	ev := expect(t, ctx, l, Error, ln)
	if !errors.Is(ev.Err, uds.ErrStolen) {
		t.Fatalf("cause %v", ev.Err)
	}
}

// A Write that times out with half its frame sent ends the connection,
// and the Disconnection says so instead of reporting a clean end.
func TestTornWriteReported(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t, WithWriteTimeout(30*time.Millisecond))
	id, _ := pair(t, l, PktLine) // a peer that never reads
	err := l.Write(id, make([]byte, 8<<20))
	if !errors.Is(err, ErrWriteTimeout) {
		t.Fatalf("Write: %v", err)
	}
	ev := expect(t, ctx, l, Disconnection, id)
	if !errors.Is(ev.Err, ErrWriteTimeout) {
		t.Fatalf("Disconnection: %v, want the write timeout", ev.Err)
	}
}

// TestFramesBehindDescriptors: a peer that attaches descriptors to a
// frame (which a connection of the Loop discards) and sends another frame
// right behind it gets both delivered. A read stops where the bytes that
// carried descriptors end, short of the buffer with more in the socket;
// taken for an empty socket, the second frame would wait for an edge that
// never comes.
func TestFramesBehindDescriptors(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	id, peer := pair(t, l, PktLine)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	first := frame.AppendMessage(nil, []byte("with descriptors"))
	if err := unix.Sendmsg(peer, first, unix.UnixRights(pipe[0]), nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(peer, frame.AppendMessage(nil, []byte("behind them"))); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, want := range []string{"with descriptors", "behind them"} {
		ev, err := l.WaitEvent(wctx)
		if err != nil {
			t.Fatalf("waiting for %q: %v", want, err)
		}
		if ev.Kind != MessageRx || ev.Conn != id || string(ev.Data) != want {
			t.Fatalf("got %v on %d (%q), want MessageRx %q", ev.Kind, ev.Conn, ev.Data, want)
		}
	}
}
