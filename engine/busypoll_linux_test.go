package engine

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestBusyPollLearns drives a loop's spin with a socket pair standing for
// its connection and doorbell: a spin ends as soon as the request is
// there, or the bell rings; a peer that comes back within a little more
// than the spin makes it longer, never beyond the longest spin; a slow
// peer turns it off, and a loop with more than one connection never
// spins. Spin times are measured, so the expectations follow them: the
// thread may lose its processor in the middle of a spin.
func TestBusyPollLearns(t *testing.T) {
	leakcheck.Check(t)
	s, err := NewServer(socketPath(t), HandlerFunc(echoRaw))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, bell := socketPairT(t), socketPairT(t)
	fd, bfd := conn[0], bell[0]
	const us = 1000
	l := &loopState{max: 50 * us, stats: &s.stats, conns: 1}

	// The loop slept for 20 µs before the next request: a 25 µs spin would
	// have caught it. After a longer sleep, still within the longest spin,
	// the spin is the longest, not more.
	l.armed, l.lastExit = true, 0
	l.enter(20 * us)
	if l.spin != 25*us {
		t.Fatalf("after a 20 µs sleep: spin %d ns, want 25000", l.spin)
	}
	l.armed, l.lastExit = true, 0
	l.enter(45 * us)
	if l.spin != 50*us {
		t.Fatalf("after a 45 µs sleep: spin %d ns, want the longest, 50000", l.spin)
	}

	// The request is there: the spin catches it, and a hit keeps a spin.
	if _, err := syscall.Write(conn[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	if !l.exit(s, true, fd, bfd) || !l.armed || l.spun == 0 {
		t.Fatalf("exit with a request waiting: caught %v, armed %v, spun %d ns", l.caught, l.armed, l.spun)
	}
	l.enter(s.now())
	if got := s.stats.spinHits.Load(); got != 1 || l.spin == 0 {
		t.Fatalf("hits %d, spin %d: want 1 hit and the spin kept", got, l.spin)
	}
	drain(t, fd)

	// Nothing comes: the spin runs its budget out. The request came 10 µs
	// later, so the next spin is longer (the longest spin is raised here
	// so that a spin stretched by the scheduler still counts as near).
	l.max, l.spin = int64(time.Second), 5*us
	if l.exit(s, true, fd, bfd) || l.spun < 5*us {
		t.Fatalf("exit with nothing waiting: caught %v, spun %d ns", l.caught, l.spun)
	}
	need := l.spun + 10*us
	l.enter(l.lastExit + 10*us)
	if want := need + need/4; l.spin != want {
		t.Fatalf("after a near miss: spin %d ns, want %d", l.spin, want)
	}

	// The bell rings: the spin ends without a request, long before its
	// budget.
	if _, err := syscall.Write(bell[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	l.spin = int64(time.Second)
	if l.exit(s, true, fd, bfd) || l.spun >= l.spin {
		t.Fatalf("exit with the bell rung: caught %v, spun %d ns", l.caught, l.spun)
	}
	l.enter(l.lastExit + 1)
	drain(t, bfd)

	// A peer far slower than the longest spin: after spinMaxMisses misses
	// spinning stops and cools down.
	l.max = 50 * us
	for range spinMaxMisses {
		l.spin = 2 * us
		l.exit(s, true, fd, bfd)
		l.enter(l.lastExit + 5_000*us)
	}
	if l.spin != 0 || l.coolUntil == 0 {
		t.Fatalf("after slow peers: spin %d, cooldown %d", l.spin, l.coolUntil)
	}

	// With two connections on the loop there is no spin and nothing learnt.
	l = &loopState{max: 50 * us, stats: &s.stats, conns: 2, spin: 25 * us}
	l.exit(s, true, fd, bfd)
	if l.armed || l.spun != 0 {
		t.Fatalf("exit with two connections: armed %v, spun %d", l.armed, l.spun)
	}
}

// socketPairT is socketPair, closed when the test ends.
func socketPairT(t *testing.T) [2]int {
	t.Helper()
	p, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(p[0]); syscall.Close(p[1]) })
	return p
}

// drain reads what waits on fd, which must not be empty.
func drain(t *testing.T, fd int) {
	t.Helper()
	if _, err := syscall.Read(fd, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
}

// TestBusyPollGivesWay: a loop whose spin always finds the next request
// waiting (a client that streams requests) still takes a new connection
// on: the spin counts as a solo wait, so the enrolment finds it, and the
// loop goes back to gnet. A spin that skipped that look would serve the
// first client for as long as it streams.
func TestBusyPollGivesWay(t *testing.T) {
	leakcheck.Check(t)
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("loops never spin with one processor")
	}
	ts := startServer(t, HandlerFunc(echoRaw), WithInlineHandlers(true), WithEventLoops(1),
		WithBusyPoll(time.Millisecond))
	a := rawPersistent(t, ts.path).(*net.UnixConn)
	_ = a.SetDeadline(time.Now().Add(time.Minute)) // it outlasts the second client's wait
	batch := bytes.Repeat(frame.AppendMessage(nil, []byte("a")), 64)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() { // the stream: requests, always some waiting
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := a.Write(batch); err != nil {
				return
			}
		}
	}()
	go func() { // its replies, read as they come so that none waits in the loop
		defer wg.Done()
		_, _ = io.Copy(io.Discard, a)
	}()
	defer func() {
		close(stop)
		_ = a.Close()
		wg.Wait()
	}()
	waitFor(t, func() bool { return ts.Stats().BusyPollHits >= 10 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := Dial(ctx, ts.path) // the handshake is the loop's first request from b
	if err != nil {
		t.Fatalf("second client: %v", err)
	}
	defer b.Close()
	if err := b.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Call([]byte("b")); err != nil || string(got) != "b" {
		t.Fatalf("second client: %q, %v", got, err)
	}
}
