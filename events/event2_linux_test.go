//go:build linux

package events

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The idle timer fires after quiet, never while events keep coming; the
// periodic one fires on time while a peer keeps the Loop busy.
func TestTimers(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	if err := l.SetTimer(Idle, 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ev := next(t, ctx, l)
	if ev.Kind != Timer || ev.Timer != Idle {
		t.Fatalf("got %+v", ev)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("idle timer after %v", d)
	}
	// Busy: a message every 5 ms for 200 ms; no idle timer among them.
	id, peer := pair(t, l, LibIPC)
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				unix.Write(peer, []byte{0, 0, 0, 1, 'x'})
			}
		}
	}()
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if ev := next(t, ctx, l); ev.Kind != MessageRx || ev.Conn != id {
			t.Fatalf("while busy: %v", ev.Kind)
		}
	}
	close(stop)
	<-sent
	l.SetTimer(Idle, 0)
	// Periodic under load: a flooding peer keeps the queue full; the
	// timer still fires about every period.
	if err := l.SetTimer(Periodic, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	flood := bytes.Repeat([]byte{0, 0, 0, 1, 'y'}, 4000)
	fdone := make(chan struct{})
	go func() {
		defer close(fdone)
		for i := 0; i < 200; i++ {
			if _, err := unix.Write(peer, flood); err != nil {
				return
			}
		}
	}()
	var ticks []time.Time
	msgs := 0
	for len(ticks) < 10 {
		ev := next(t, ctx, l)
		switch ev.Kind {
		case Timer:
			if ev.Timer != Periodic {
				t.Fatalf("timer %v", ev.Timer)
			}
			ticks = append(ticks, time.Now())
		case MessageRx:
			msgs++
		default:
			t.Fatalf("got %v", ev.Kind)
		}
	}
	l.SetTimer(Periodic, 0)
	if msgs < 100 {
		t.Fatalf("only %d messages between ten ticks: the load did not happen", msgs)
	}
	// Generous bounds: the machine is shared. Ten ticks of 20 ms cannot
	// come in less than 180 ms, nor (if the timer is served under load)
	// take more than a few periods each.
	if total := ticks[9].Sub(ticks[0]); total < 170*time.Millisecond || total > 2*time.Second {
		t.Fatalf("nine periods took %v", total)
	}
	unix.Shutdown(peer, unix.SHUT_RDWR)
	<-fdone
	if err := l.SetTimer(Idle, -1); err == nil {
		t.Fatal("negative timer accepted")
	}
}

// An external descriptor is reported once per readiness the application
// has not handled, never read by the Loop, and not reported again once
// the application read it.
func TestExternal(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	id, err := l.AddExternal(p[0])
	if err != nil {
		t.Fatal(err)
	}
	quiet(t, l, 20*time.Millisecond)
	unix.Write(p[1], []byte("abc"))
	ev := expect(t, ctx, l, External, id)
	if ev.FD != p[0] {
		t.Fatalf("FD %d, want %d", ev.FD, p[0])
	}
	// Not read by the Loop: the bytes are still there.
	var buf [8]byte
	if n, _ := unix.Read(p[0], buf[:]); n != 3 {
		t.Fatalf("the Loop read the external descriptor: %d bytes left", n)
	}
	// Handled: no further report, however long we wait.
	quiet(t, l, 50*time.Millisecond)
	// Unhandled readiness is reported once per WaitEvent, in turn with
	// other work, not in a loop inside one call.
	unix.Write(p[1], []byte("d"))
	cid, peer := pair(t, l, LibIPC)
	expect(t, ctx, l, External, id)
	writeAll(t, peer, enc(t, LibIPC, 0, []byte("m")))
	seen := map[Kind]int{}
	for seen[MessageRx] == 0 {
		ev := next(t, ctx, l)
		seen[ev.Kind]++
		if ev.Kind == MessageRx && ev.Conn != cid {
			t.Fatal("wrong connection")
		}
	}
	if seen[External] > 2 {
		t.Fatalf("external reported %d times before the message", seen[External])
	}
	unix.Read(p[0], buf[:])
	// Closing forgets the descriptor without closing it.
	if err := l.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	unix.Write(p[1], []byte("e"))
	quiet(t, l, 30*time.Millisecond)
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0); err != nil {
		t.Fatalf("external descriptor closed by the Loop: %v", err)
	}
}

// A switch relays both ways through its transforms; when one side ends,
// both close and each is reported once.
func TestSwitch(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	a, pa := pair(t, l, LibIPC)
	b, pb := pair(t, l, PktLine) // the two sides may differ in format
	upper := func(dst, msg []byte) ([]byte, SwitchResult) {
		if string(msg) == "skip" {
			return dst, Ignore
		}
		return append(dst, bytes.ToUpper(msg)...), Forward
	}
	if err := l.AddSwitch(a, b, upper, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.AddSwitch(a, b, nil, nil); !errors.Is(err, ErrSwitched) {
		t.Fatalf("second switch: %v", err)
	}
	// The loop runs on its own goroutine, as an application's would.
	evs := make(chan Event, 100)
	go func() {
		defer close(evs)
		for {
			ev, err := l.WaitEvent(ctx)
			if err != nil {
				return
			}
			evs <- ev
		}
	}()
	writeAll(t, pa, enc(t, LibIPC, 0, []byte("skip")))
	writeAll(t, pa, enc(t, LibIPC, 0, []byte("hello")))
	if got, _ := readFrame(t, pb, PktLine); string(got) != "HELLO" {
		t.Fatalf("a->b: %q", got)
	}
	writeAll(t, pb, enc(t, PktLine, 0, []byte("back")))
	if got, _ := readFrame(t, pa, LibIPC); string(got) != "back" {
		t.Fatalf("b->a: %q", got)
	}
	unix.Shutdown(pa, unix.SHUT_WR) // side a ends
	count := map[Kind]map[ConnID]int{}
	for ev := range evs {
		if count[ev.Kind] == nil {
			count[ev.Kind] = map[ConnID]int{}
		}
		count[ev.Kind][ev.Conn]++
		if d := count[Disconnection]; d[a] == 1 && d[b] == 1 {
			break
		}
	}
	if count[SwitchRx][a] != 2 || count[SwitchRx][b] != 1 || count[SwitchTx][b] != 1 || count[SwitchTx][a] != 1 {
		t.Fatalf("switch events %v", count)
	}
	if count[MessageRx] != nil || count[MessageTx] != nil {
		t.Fatalf("switched traffic reported as messages: %v", count)
	}
	// No second report for either side.
	select {
	case ev, ok := <-evs:
		if ok {
			t.Fatalf("after teardown: %v on %d", ev.Kind, ev.Conn)
		}
	case <-time.After(50 * time.Millisecond):
	}
	// b's peer sees the end too.
	var one [1]byte
	if n, _ := unix.Read(pb, one[:]); n != 0 {
		t.Fatal("b's peer still connected")
	}
	l.Close()
}

// A transform that returns the message itself (its documented right) for
// a message larger than the Loop's scratch leaves the input after it
// intact: the result is not taken as scratch, whose next use would write
// into the read buffer.
func TestSwitchTransformReturnsMessage(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	a, pa := pair(t, l, LibIPC)
	b, pb := pair(t, l, LibIPC)
	big := bytes.Repeat([]byte("m"), 100)
	xf := func(dst, msg []byte) ([]byte, SwitchResult) {
		if len(msg) == len(big) {
			return msg, Forward
		}
		return append(append(dst, "T:"...), msg...), Forward
	}
	if err := l.AddSwitch(a, b, xf, nil); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := l.WaitEvent(ctx); err != nil {
				return
			}
		}
	}()
	// The large message first; then two in one write, which land where it
	// lay in the read buffer, the second waiting there while the first is
	// relayed.
	writeAll(t, pa, enc(t, LibIPC, 0, big))
	if got, _ := readFrame(t, pb, LibIPC); !bytes.Equal(got, big) {
		t.Fatalf("relayed %.20q, want the message itself", got)
	}
	writeAll(t, pa, append(enc(t, LibIPC, 0, []byte("x")), enc(t, LibIPC, 0, []byte("hello"))...))
	for _, want := range []string{"T:x", "T:hello"} {
		if got, _ := readFrame(t, pb, LibIPC); string(got) != want {
			t.Fatalf("relayed %.20q, want %.20q", got, want)
		}
	}
	l.Close()
}

// A connection whose peer goes while messages wait in its queue reports
// each of them (MessageTx, with the error for those dropped) before its
// Disconnection, and nothing after it.
func TestDisconnectionAfterItsMessages(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	id, peer := pair(t, l, LibIPC) // a peer that reads nothing
	big := make([]byte, 64<<10)
	const n = 12 // more than the socket takes: some wait in the queue
	for i := range n {
		if err := l.Schedule(id, big); err != nil {
			t.Fatalf("Schedule %d: %v", i, err)
		}
	}
	unix.Close(peer)
	tx := 0
	for {
		ev := next(t, ctx, l)
		if ev.Conn != id {
			continue
		}
		if ev.Kind == Disconnection {
			break
		}
		if ev.Kind != MessageTx {
			t.Fatalf("%v before the Disconnection", ev.Kind)
		}
		tx++
	}
	if tx != n {
		t.Fatalf("%d MessageTx before the Disconnection, want %d", tx, n)
	}
	quiet(t, l, 50*time.Millisecond)
}

// A transform that answers SwitchError ends both sides.
func TestSwitchTransformError(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t)
	a, pa := pair(t, l, LibIPC)
	b, _ := pair(t, l, LibIPC)
	bad := func(dst, msg []byte) ([]byte, SwitchResult) { return dst, SwitchError }
	if err := l.AddSwitch(a, b, bad, nil); err != nil {
		t.Fatal(err)
	}
	writeAll(t, pa, enc(t, LibIPC, 0, []byte("x")))
	got := map[ConnID]error{}
	for len(got) < 2 {
		ev := expect(t, ctx, l, Disconnection, 0)
		if _, dup := got[ev.Conn]; dup {
			t.Fatalf("%d reported twice", ev.Conn)
		}
		got[ev.Conn] = ev.Err
	}
	if got[a] == nil || got[b] == nil || !errors.Is(got[a], ErrClosed) {
		t.Fatalf("causes %v", got)
	}
	quiet(t, l, 30*time.Millisecond)
}

// Closing a connection with messages queued: each is reported dropped, a
// blocked Write fails, nothing leaks.
func TestCloseWithQueued(t *testing.T) {
	ctx := checked(t)
	l := newTestLoop(t, WithQueueLimit(64, 1<<20), WithWriteTimeout(10*time.Second))
	id, _ := pair(t, l, PktLine) // a peer that never reads
	big := make([]byte, 32<<10)
	scheduled := 0
	var err error
	for ; scheduled < 1000; scheduled++ {
		if err = l.Schedule(id, big); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("after %d: %v", scheduled, err)
	}
	var ce *ConnError
	if !errors.As(err, &ce) || ce.Conn != id {
		t.Fatalf("untyped: %#v", err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- l.Write(id, big) }()
	time.Sleep(20 * time.Millisecond)
	if err := l.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		if err == nil {
			t.Fatal("a Write to a closed connection succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write still blocked after CloseConn")
	}
	ok, dropped := 0, 0
	for ok+dropped < scheduled {
		ev := expect(t, ctx, l, MessageTx, id)
		if ev.Err == nil {
			if dropped > 0 {
				t.Fatal("a written message reported after a dropped one")
			}
			ok++
		} else {
			if !errors.Is(ev.Err, ErrClosed) {
				t.Fatalf("drop cause %v", ev.Err)
			}
			dropped++
		}
	}
	if dropped == 0 {
		t.Fatal("nothing was dropped: the peer read?")
	}
	t.Logf("%d written, %d dropped", ok, dropped)
	quiet(t, l, 20*time.Millisecond)
}

// Closing the Loop ends a WaitEvent waiting on another goroutine, and
// its context's cancellation after Close touches nothing.
func TestCloseWakesWait(t *testing.T) {
	checked(t)
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := l.WaitEvent(ctx)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v", err)
	}
	// A descriptor opened now may reuse the wake descriptor's number; the
	// cancellation must not write to it.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	cancel()
	l.SetTimer(Idle, time.Second)
	var b [8]byte
	for _, fd := range p {
		if n, _ := unix.Read(fd, b[:]); n > 0 {
			t.Fatalf("wrote into descriptor %d after Close", fd)
		}
	}
	if _, err := l.WaitEvent(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := l.AddConn(-1, PktLine); err == nil {
		t.Fatal("AddConn after Close")
	}
}

// TestNoEventAfterClose: once the Loop is closed, WaitEvent says so, even
// with a periodic timer due.
func TestNoEventAfterClose(t *testing.T) {
	checked(t)
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetTimer(Periodic, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	l.Close()
	time.Sleep(5 * time.Millisecond) // the timer is due
	if ev, err := l.WaitEvent(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitEvent after Close: %v (%v), want ErrClosed", ev.Kind, err)
	}
}
