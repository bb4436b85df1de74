//go:build linux

package events

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/fdpass"
	"github.com/pktipc/pktipc/uds"
)

// Descriptors travel on a service connection the way LibIPC's ipcd hands
// them out, but through fdpass: both sides agree in a message, then
// Detach the connection from their Loops and hand it to fdpass.
func TestDetachPassFDs(t *testing.T) {
	ctx := checked(t)
	dir := filepath.Join(t.TempDir(), "run")
	srv := newTestLoop(t, WithRunDir(dir), WithListenOptions(uds.WithPassRights(true)))
	cli := newTestLoop(t, WithRunDir(dir))
	if _, err := srv.Listen("ipcd", LibIPC); err != nil {
		t.Fatal(err)
	}
	id, err := cli.Connect(ctx, "ipcd", LibIPC)
	if err != nil {
		t.Fatal(err)
	}
	sc := expect(t, ctx, srv, Connection, 0).Conn
	if err := cli.Write(id, []byte("pong")); err != nil {
		t.Fatal(err)
	}
	expect(t, ctx, srv, MessageRx, sc)
	if err := srv.Write(sc, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if ev := expect(t, ctx, cli, MessageRx, id); string(ev.Data) != "ok" {
		t.Fatalf("got %q", ev.Data)
	}
	sconn, err := srv.Detach(sc)
	if err != nil {
		t.Fatal(err)
	}
	cconn, err := cli.Detach(id)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := fdpass.New(sconn)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	cp, err := fdpass.New(cconn)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	done, err := sp.SendChan([]int{p[0]}, []byte("here"))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m, err := cp.Recv(time.Now().Add(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if string(m.Data) != "here" || len(m.FDs) != 1 {
		t.Fatalf("got %q with %d descriptors", m.Data, len(m.FDs))
	}
	unix.Write(p[1], []byte("through the pipe"))
	var b [32]byte
	if n, _ := unix.Read(m.FDs[0], b[:]); string(b[:n]) != "through the pipe" {
		t.Fatalf("read %q", b[:n])
	}
	// Detached connections are gone from the Loops.
	if err := srv.Write(sc, []byte("x")); !errors.Is(err, ErrUnknownConn) {
		t.Fatalf("write after Detach: %v", err)
	}
}

// Detach refuses a connection whose bytes the Loop has started reading.
func TestDetachBuffered(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	id, peer := pair(t, l, LibIPC)
	writeAll(t, peer, append(enc(t, LibIPC, 0, []byte("a")), enc(t, LibIPC, 0, []byte("b"))...))
	expect(t, ctx, l, MessageRx, id)
	if _, err := l.Detach(id); !errors.Is(err, ErrBuffered) {
		t.Fatalf("got %v", err)
	}
	expect(t, ctx, l, MessageRx, id)
	c, err := l.Detach(id)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A message written before Detach is still reported (MessageTx); a
// connection whose write failed is not handed out, and its end is
// reported.
func TestDetachOwedEvents(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t, WithWriteTimeout(20*time.Millisecond))
	id, peer := pair(t, l, LibIPC)
	if err := l.Schedule(id, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	c, err := l.Detach(id) // "hi" went to the socket at once
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	expect(t, ctx, l, MessageTx, id)
	if got, _ := readFrame(t, peer, LibIPC); string(got) != "hi" {
		t.Fatalf("the peer read %q", got)
	}

	// A Write that times out half-way through a frame shuts the write
	// side down.
	id, _ = pair(t, l, LibIPC) // a peer that never reads
	msg := make([]byte, 99_000)
	err = nil
	for i := 0; err == nil; i++ {
		if i == 1000 {
			t.Fatal("1000 Writes to a peer that reads nothing did not time out")
		}
		err = l.Write(id, msg)
	}
	if !errors.Is(err, ErrWriteTimeout) {
		t.Fatalf("Write: %v, want ErrWriteTimeout", err)
	}
	c2 := l.l.lookup(id)
	c2.wmu.Lock()
	torn := c2.wclosed
	c2.wmu.Unlock()
	if !torn {
		t.Log("the Write that timed out had written nothing: no torn frame to look at")
		return
	}
	if _, err := l.Detach(id); !errors.Is(err, ErrClosed) {
		t.Fatalf("Detach after a failed write: %v, want ErrClosed", err)
	}
	for {
		if ev := next(t, ctx, l); ev.Conn == id && ev.Kind == Disconnection {
			break
		}
	}
}

// Run hands every event to its callback and stops with the callback's
// error.
func TestRun(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	id, peer := pair(t, l, PktLine)
	writeAll(t, peer, enc(t, PktLine, 0, []byte("one")))
	writeAll(t, peer, enc(t, PktLine, 0, []byte("two")))
	stop := errors.New("stop")
	var got []string
	err := l.Run(ctx, func(ev Event) error {
		if ev.Kind != MessageRx || ev.Conn != id {
			t.Errorf("got %v", ev.Kind)
		}
		got = append(got, string(ev.Data))
		if len(got) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Fatalf("Run: %v, %q", err, got)
	}
}
