package engine

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestBudgetFullServesOneShot: a git-style request that arrives while the
// budget is full is served, and the connection holding the most is closed
// for it, as for a request on a loop; before, a request that a worker was
// to serve was closed without a reply whenever the budget had no room at
// that moment (seen once under TestMemoryBudget's attack).
func TestBudgetFullServesOneShot(t *testing.T) {
	leakcheck.Check(t)
	const budget = 8 << 20
	// No request timeout: on a loaded machine the attacker's could end it
	// before the ping, freeing the budget.
	ts := startServer(t, HandlerFunc(gitDaemon), WithMemoryBudget(budget), WithMaxRequestSize(16<<20), WithRequestTimeout(0))
	if ts.Server.opts.inline {
		t.Fatal("the test needs requests served on the workers")
	}
	attacker := fillBudget(t, ts)
	got, err := pingOneShot(t, ts)
	if err != nil || string(got) != "pong" {
		t.Fatalf("a ping while the budget is full: %q, %v", got, err)
	}
	readAll(t, attacker) // fails the test unless the server closes it
	if n := ts.Stats().BudgetClosed; n != 1 {
		t.Errorf("%d connections closed for the budget, want the attacker alone", n)
	}
}

// pingOneShot sends pings to ts until one takes the git-style path, whole
// when the accept loop takes its connection, where a pooled request's copy
// needs room in the budget (poolOneShot), and returns its result. A ping
// whose bytes come after the accept loop's grace (a loaded machine) is
// read on an event loop and served at once, needing no buffer: the budget
// neither refuses it nor closes anyone for it.
func pingOneShot(t *testing.T, ts *testServer) ([]byte, error) {
	t.Helper()
	for range 50 {
		before := ts.Stats()
		got, err := Send(context.Background(), ts.path, []byte("ping"))
		if after := ts.Stats(); after.OneShot != before.OneShot || after.BudgetClosed != before.BudgetClosed {
			return got, err
		}
	}
	t.Fatal("no ping of 50 came whole with its connection")
	return nil, nil
}

// fillBudget has an attacker hold 3 MiB of a request it never ends, and
// takes the rest of ts's budget as other connections would, until the
// test ends. It returns the attacker's connection. ts must not time the
// request out.
func fillBudget(t *testing.T, ts *testServer) *net.UnixConn {
	t.Helper()
	attacker := dialRaw(t, ts.path)
	chunk := frame.AppendData(nil, make([]byte, 65516))
	const chunks = 3 << 20 / 65516
	for range chunks {
		if _, err := attacker.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	// The server has read every byte, and its loop has accounted for
	// them: the attacker holds its assembler's buffer alone. Filling the
	// budget before that would leave room (or too little) once the rest
	// was read.
	gathering := int64(1) << (arenaClass(chunks*65516) + arenaMinClass)
	waitFor(t, func() bool {
		n, err := unreadOf(attacker)
		if err != nil {
			t.Fatal(err)
		}
		return n == 0 && ts.Stats().Buffered == gathering
	})
	b := &ts.Server.budget
	b.makeRoom(b.evictAt()) // the arena's cache goes first
	fill := b.evictAt() - b.used.Load()
	b.used.Add(fill)
	t.Cleanup(func() { b.used.Add(-fill) })
	return attacker
}

// TestMemoryBudget: connections that send large requests without ever
// ending them are closed, largest first, once together they would pass the
// budget; what the server buffers stays within it; a client with an
// ordinary request is served throughout; the arena keeps little after.
func TestMemoryBudget(t *testing.T) {
	leakcheck.Check(t)
	const budget = 8 << 20
	ts := startServer(t, HandlerFunc(gitDaemon), WithMemoryBudget(budget), WithMaxRequestSize(16<<20))
	const attackers = 12
	chunk := frame.AppendData(nil, make([]byte, 65516))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var peak int64
	var peakMu sync.Mutex
	sample := func() {
		peakMu.Lock()
		defer peakMu.Unlock()
		if st := ts.Stats(); st.Buffered+st.BufferCache+st.BufferReleasing > peak {
			peak = st.Buffered + st.BufferCache + st.BufferReleasing
		}
	}
	for range attackers {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			for range 15 << 20 / 65516 { // 15 MiB, never terminated
				if _, err := c.Write(chunk); err != nil {
					return // closed by the server
				}
			}
			<-stop
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		sample()
		if got, err := Send(context.Background(), ts.path, []byte("ping")); err != nil || string(got) != "pong" {
			t.Fatalf("an ordinary client during the attack: %q, %v", got, err)
		}
		if ts.Stats().BudgetClosed >= attackers-budget/(15<<20)-1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	sample()
	close(stop)
	wg.Wait()
	st := ts.Stats()
	t.Logf("peak %d KiB buffered (budget %d KiB); %+v", peak>>10, budget>>10, st)
	if st.BudgetClosed == 0 {
		t.Fatal("no connection was closed for the budget")
	}
	// A connection may overshoot by what one loop reads at once while an
	// evicted one closes.
	if slack := int64(2 * readBufferCap); peak > budget+slack {
		t.Fatalf("buffered %d bytes at peak, budget %d", peak, budget)
	}
	waitFor(t, func() bool { st := ts.Stats(); return st.Open == 0 && st.Buffered == 0 && st.BufferReleasing == 0 })
	waitFor(t, func() bool { return ts.Stats().BufferCache <= arenaKeep })
}

// TestBudgetCountsReleasing: the bytes of a connection closed for the
// budget count until its loop has released them, and while those of
// earlier closes fill the share kept for them, a request that needs room
// is refused rather than another connection closed: its buffers would
// join the ones not yet released.
func TestBudgetCountsReleasing(t *testing.T) {
	leakcheck.Check(t)
	const budget = 8 << 20
	ts := startServer(t, HandlerFunc(gitDaemon), WithMemoryBudget(budget), WithMaxRequestSize(16<<20), WithRequestTimeout(0))
	attacker := fillBudget(t, ts)
	b := &ts.Server.budget
	// Closes on their way hold the whole share: the attacker's 3 MiB
	// would not fit beside them.
	pending := int64(budget / closingShare)
	b.releasing.Add(pending)
	if got, err := pingOneShot(t, ts); err == nil {
		t.Fatalf("a ping with no room and the closes' share full was served: %q", got)
	}
	if st := ts.Stats(); st.BufferReleasing != pending || st.BudgetClosed != 1 {
		t.Fatalf("releasing %d bytes (want %d), %d closed for the budget (want the ping's refusal)", st.BufferReleasing, pending, st.BudgetClosed)
	}
	b.released(pending)
	got, err := pingOneShot(t, ts)
	if err != nil || string(got) != "pong" {
		t.Fatalf("a ping once the closes were released: %q, %v", got, err)
	}
	readAll(t, attacker) // fails the test unless the server closes it
	if st := ts.Stats(); st.BudgetClosed != 2 {
		t.Errorf("%d connections closed for the budget, want the ping's refusal and the attacker", st.BudgetClosed)
	}
	waitFor(t, func() bool { return ts.Stats().BufferReleasing == 0 })
}

// TestBudgetSparesSmaller: a connection is never closed for a larger one's
// sake: when the largest holder asks for more, it is the one refused.
func TestBudgetSparesSmaller(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMemoryBudget(4<<20), WithMaxRequestSize(16<<20))
	small := dialRaw(t, ts.path)
	if _, err := small.Write(frame.AppendData(nil, make([]byte, 300_000))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Stats().Buffered >= 300_000 })
	big := dialRaw(t, ts.path)
	go func() {
		chunk := frame.AppendData(nil, make([]byte, 65516))
		for range 200 {
			if _, err := big.Write(chunk); err != nil {
				return
			}
		}
	}()
	if d := closedWithin(t, big, time.Now()); d > 5*time.Second {
		t.Fatalf("the largest holder was closed after %v", d)
	}
	if _, err := small.Write([]byte("0000")); err != nil {
		t.Fatal(err)
	}
	got, kind := readAll(t, small)
	if len(got) == 0 || kind != kindEOF {
		t.Fatalf("the smaller connection got %d bytes (%s)", len(got), kind)
	}
	if st := ts.Stats(); st.BudgetClosed != 1 {
		t.Fatalf("BudgetClosed = %d", st.BudgetClosed)
	}
}
