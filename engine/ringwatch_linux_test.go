//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package engine

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/ring"
)

// watchedRing is a ring of this process for the watch's tests: its
// writer, and its reader in a place for a watch.
type watchedRing struct {
	w    *ring.Writer
	wait ringWait
}

func newWatchedRing(t *testing.T) *watchedRing {
	t.Helper()
	w, r := newRingPair(t, ring.MinCapacity)
	r.SetDeadline(time.Unix(1, 0)) // Next never waits: the watch does
	return &watchedRing{w: w, wait: newRingWait(r)}
}

// newRingPair makes a ring of size bytes and both its sides, closed when
// the test ends.
func newRingPair(t *testing.T, size int) (*ring.Writer, *ring.Reader) {
	t.Helper()
	f, err := ring.Create(size)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := ring.NewWriter(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	r, err := ring.NewReader(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return w, r
}

func (wr *watchedRing) send(t *testing.T, msg string) {
	p, err := wr.w.Reserve(len(msg))
	if err != nil {
		t.Error(err)
		return
	}
	if err := wr.w.Commit(copy(p, msg), false); err != nil {
		t.Error(err)
	}
}

// TestRingWatchHandsBackEveryRecord: rings written in a random order, a
// record at a time, each read by a goroutine that waits in one watch
// while its ring is empty: every wait ends with the ring's record there,
// and every record is read once, in order.
func TestRingWatchHandsBackEveryRecord(t *testing.T) {
	leakcheck.Check(t)
	const rings, each = 32, 50
	rw := &ringWatch{idle: time.Minute, stay: time.Minute}
	defer rw.stop()
	all := make([]*watchedRing, rings)
	for i := range all {
		all[i] = newWatchedRing(t)
	}
	taken := make([]chan struct{}, rings) // a record was read: the next may go
	var wg sync.WaitGroup
	for i, wr := range all {
		taken[i] = make(chan struct{}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := wr.wait.r
			for k := range each {
				if !r.Ready() {
					if !rw.wait(&wr.wait, time.Now().Add(time.Minute)) {
						t.Errorf("ring %d: the watch refused", i)
						return
					}
					if !r.Ready() {
						t.Errorf("ring %d: handed back with nothing to read", i)
						return
					}
				}
				p, _, err := r.Next()
				if want := fmt.Sprintf("%d/%d", i, k); err != nil || string(p) != want {
					t.Errorf("ring %d: read %q, %v; want %q", i, p, err, want)
					return
				}
				r.Release()
				taken[i] <- struct{}{}
			}
		}()
	}
	next := make([]int, rings)
	for left := rings * each; left > 0; left-- {
		i := rand.IntN(rings)
		for next[i] == each {
			i = (i + 1) % rings
		}
		if next[i] > 0 {
			<-taken[i]
		}
		all[i].send(t, fmt.Sprintf("%d/%d", i, next[i]))
		next[i]++
	}
	wg.Wait()
	if rw.handed.Load() == 0 {
		t.Error("no ring was handed back with a record: the test did not wait in the watch")
	}
}

// TestRingWatchHandsBackWithoutRecords: a ring with nothing to read goes
// back at its time, when the watch has been idle, when the ring closes,
// and when the watch stops; a stopped watch takes nothing.
func TestRingWatchHandsBackWithoutRecords(t *testing.T) {
	leakcheck.Check(t)
	within := func(name string, rw *ringWatch, wr *watchedRing, until time.Duration, act func(), least, most time.Duration) {
		t.Helper()
		start := time.Now()
		done := make(chan bool, 1)
		go func() { done <- rw.wait(&wr.wait, start.Add(until)) }()
		if act != nil {
			time.Sleep(least)
			act()
		}
		select {
		case ok := <-done:
			if took := time.Since(start); !ok || took < least || took > most {
				t.Errorf("%s: wait = %v after %v; want true within [%v, %v]", name, ok, took, least, most)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still waiting after 10s", name)
		}
	}
	long := &ringWatch{idle: time.Minute, stay: time.Minute}
	within("its time", long, newWatchedRing(t), 30*time.Millisecond, nil, 30*time.Millisecond, 5*time.Second)

	idle := &ringWatch{idle: 20 * time.Millisecond, stay: time.Minute}
	within("idle watch", idle, newWatchedRing(t), time.Minute, nil, 20*time.Millisecond, 5*time.Second)
	idle.stop()

	wr := newWatchedRing(t)
	within("ring closed", long, wr, time.Minute, func() { wr.wait.r.Close() }, 20*time.Millisecond, 5*time.Second)
	if !wr.wait.r.Ready() {
		t.Error("a closed ring is not Ready")
	}

	within("watch stopped", long, newWatchedRing(t), time.Minute, long.stop, 20*time.Millisecond, 5*time.Second)
	if long.wait(&newWatchedRing(t).wait, time.Now().Add(time.Minute)) {
		t.Error("a stopped watch took a ring")
	}
}

// leastAllocs is the least of tries measures of testing.AllocsPerRun(runs,
// f). Where many goroutines block and wake across processors, the runtime
// allocates now and then for itself (a waiter's record when its
// processor's cache ran dry, a goroutine's descriptor), more on a loaded
// machine; a path of f that allocates does so in every measure.
func leastAllocs(tries, runs int, f func()) float64 {
	least := testing.AllocsPerRun(runs, f)
	for range tries - 1 {
		least = min(least, testing.AllocsPerRun(runs, f))
	}
	return least
}

// TestRingWatchAllocs: a wait in the watch allocates nothing once the
// watch runs.
func TestRingWatchAllocs(t *testing.T) {
	leakcheck.Check(t)
	rw := &ringWatch{idle: time.Minute, stay: time.Minute}
	defer rw.stop()
	wr := newWatchedRing(t)
	cycle := func() {
		wr.send(t, "x")
		if !rw.wait(&wr.wait, time.Now().Add(time.Minute)) {
			t.Fatal("the watch refused")
		}
		if _, _, err := wr.wait.r.Next(); err != nil {
			t.Fatal(err)
		}
		wr.wait.r.Release()
	}
	cycle()
	if n := testing.AllocsPerRun(200, cycle); n != 0 {
		t.Errorf("%v allocations per wait; want 0", n)
	}
}

// watchesUsed counts the hand-backs with a record and the goroutine
// starts of ts's watch and the Clients' one: it grows when a wait goes
// through either. In one process (GOMAXPROCS-1 watches at once:
// watching) the two may take turns, or one may run throughout.
func watchesUsed(ts *testServer) uint64 {
	n := ts.Server.rings.watch.handed.Load() + clientRings.handed.Load()
	for _, w := range []*ringWatch{&ts.Server.rings.watch, &clientRings} {
		w.mu.Lock()
		n += w.starts
		w.mu.Unlock()
	}
	return n
}

// TestRingsCrowdWatched: many Clients calling at once on rings; their
// waits or the server's go through a watch and every reply is the right
// one.
func TestRingsCrowdWatched(t *testing.T) {
	needProcs(t, 2)
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	before := watchesUsed(ts)
	const clients, calls = 12, 300
	var wg sync.WaitGroup
	for i := range clients {
		c := dialRings(t, ts.path)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range calls {
				req := pattern(1+(i*calls+k)%700, i*calls+k)
				got, err := c.Call(req)
				if err != nil || !bytes.Equal(got, req) {
					t.Errorf("client %d call %d: %d bytes, %v", i, k, len(got), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if watchesUsed(ts) == before {
		t.Error("no wait went through a watch")
	}
}

// TestZeroAllocsRingsCrowd: Clients calling at once on rings, whose waits
// (and the server's) go through the watches, allocate nothing per round
// trip either, on either side.
func TestZeroAllocsRingsCrowd(t *testing.T) {
	needProcs(t, 2)
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	zeroAllocsCrowd(t, ts)
}

// TestZeroAllocsRingsServedOnWatch: TestZeroAllocsRingsCrowd with inline
// handlers, which the server's watch runs itself.
func TestZeroAllocsRingsServedOnWatch(t *testing.T) {
	watchProcs(t)
	leakcheck.Check(t)
	bothServeModes(t, func(t *testing.T, serveAll bool) {
		var watched atomic.Int64
		ts := startServer(t, countingEcho(&watched), withRings, WithInlineHandlers(true))
		ts.Server.rings.watch.serveAll.Store(serveAll)
		zeroAllocsCrowd(t, ts)
		if watched.Load() == 0 {
			t.Error("the server's watch served nothing")
		}
		spread := ts.Server.rings.watch.spread.Load()
		t.Logf("%d requests served on the watch, %d rings handed back to spread", watched.Load(), spread)
		if !serveAll && spread <= 6 { // a client's close can count too
			t.Error("no request was handed back to spread: the measure missed that path")
		}
	})
}

// zeroAllocsCrowd has Clients call ts at once and measures the
// allocations of a round of their calls.
func zeroAllocsCrowd(t *testing.T, ts *testServer) {
	const clients, calls = 6, 20
	start := make([]chan struct{}, clients)
	done := make(chan error, clients)
	var wg sync.WaitGroup
	defer func() {
		for _, ch := range start {
			close(ch)
		}
		wg.Wait()
	}()
	for i := range clients {
		c := dialRings(t, ts.path)
		start[i] = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := pattern(64, i)
			for range start[i] {
				var err error
				for range calls {
					if err = c.Send(req); err != nil {
						break
					}
					if _, err = c.Recv(); err != nil {
						break
					}
				}
				done <- err
			}
		}()
	}
	round := func() {
		for _, ch := range start {
			ch <- struct{}{}
		}
		for range clients {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	// Over the whole test: a wait goes through a watch only while the
	// process's budget lets one run (watching).
	before := watchesUsed(ts)
	for range 20 {
		round()
	}
	if allocs := leastAllocs(3, 50, round); allocs != 0 {
		t.Errorf("%v allocations per round of %d calls by %d Clients at once, want 0", allocs, calls, clients)
	}
	if watchesUsed(ts) == before {
		t.Error("no wait went through a watch: the test measured the lone path")
	}
}

// TestRingWatchBudget: a watch's goroutine starts only while fewer than
// GOMAXPROCS-1 others of the process run, so that a processor is left to
// poll the network; a wait it refuses returns false at once.
func TestRingWatchBudget(t *testing.T) {
	leakcheck.Check(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	if n := watching.Load(); n != 0 {
		t.Fatalf("%d watches run before the test", n)
	}
	first := &ringWatch{idle: time.Minute, stay: time.Minute, procs: true}
	second := &ringWatch{idle: time.Minute, stay: time.Minute, procs: true}
	held := newWatchedRing(t)
	done := make(chan bool, 1)
	go func() { done <- first.wait(&held.wait, time.Now().Add(time.Minute)) }()
	waitWithin(t, 5*time.Second, func() bool { return watching.Load() == 1 })
	start := time.Now()
	if second.wait(&newWatchedRing(t).wait, time.Now().Add(time.Minute)) {
		t.Error("a second watch started with GOMAXPROCS 2")
	} else if took := time.Since(start); took > time.Second {
		t.Errorf("a refused wait took %v", took)
	}
	held.send(t, "x")
	if ok := <-done; !ok {
		t.Error("the first watch refused its wait")
	}
	first.stop()
	second.stop()
	if n := watching.Load(); n != 0 {
		t.Errorf("%d watches run after both stopped", n)
	}
}

// TestRingWatchNaps: a watch whose rings are quiet naps on them, and what
// it must not sleep through ends the nap: a record on a ring it holds, a
// ring handed to it (whose record it could not see while it slept), a cut
// wait, its stop. Naps here last up to a minute: a lost wake-up shows as
// a wait of 5 s, where each comes at once.
func TestRingWatchNaps(t *testing.T) {
	needNaps(t)
	leakcheck.Check(t)
	rw := &ringWatch{idle: 100 * time.Microsecond, stay: time.Minute, napMax: time.Minute}
	stopped := false
	defer func() {
		if !stopped {
			rw.stop()
		}
	}()
	a, b, c := newWatchedRing(t), newWatchedRing(t), newWatchedRing(t)
	waiting := func(wr *watchedRing) chan bool {
		done := make(chan bool, 1)
		go func() { done <- rw.wait(&wr.wait, time.Now().Add(time.Minute)) && wr.wait.ready }()
		return done
	}
	// napped waits for the watch to nap, after the naps counted before it
	// (the count grows when a nap ends).
	napped := func(after uint64) uint64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for rw.naps.Load() < after || !rw.napping.Load() {
			if time.Now().After(deadline) {
				t.Fatal("the watch did not nap on quiet rings")
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond) // into the nap
		return rw.naps.Load() + 1        // once this one ends
	}
	within := func(what string, done chan bool, ready bool) {
		t.Helper()
		select {
		case got := <-done:
			if got != ready {
				t.Fatalf("%s: handed back with a record %v, want %v", what, got, ready)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the nap went on", what)
		}
	}

	doneA, doneB := waiting(a), waiting(b)
	n := napped(0)
	a.send(t, "a")
	within("a record on a ring slept on", doneA, true)

	n = napped(n)
	doneC := waiting(c) // added while the watch naps on b alone
	n = napped(n)
	c.send(t, "c")
	within("a record on a ring handed over during a nap", doneC, true)

	napped(n)
	b.wait.cut.Store(true) // as Client.SetDeadline does
	rw.poke()
	within("a cut wait", doneB, false)

	b.wait.cut.Store(false) // as the Client does before a wait
	n = rw.naps.Load()
	doneB = waiting(b)
	napped(n)
	start := time.Now()
	rw.stop()
	stopped = true
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop waited %v for a napping watch", d)
	}
	within("the watch stopped", doneB, false)
}

// TestRingsQuietCrowdNaps: Clients on rings whose replies each take a
// millisecond: the watch that has their waits (or the server's) naps
// between replies, and every reply still comes, the right one, deadlines
// moved meanwhile included.
func TestRingsQuietCrowdNaps(t *testing.T) {
	needProcs(t, 2)
	needNaps(t)
	leakcheck.Check(t)
	slow := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		time.Sleep(time.Millisecond)
		_, err := w.Write(req)
		return err
	})
	ts := startServer(t, slow, withRings)
	naps := func() uint64 { return ts.Server.rings.watch.naps.Load() + clientRings.naps.Load() }
	before := naps()
	const clients, calls = 6, 40
	var wg sync.WaitGroup
	for i := range clients {
		c := dialRings(t, ts.path)
		wg.Go(func() {
			for k := range calls {
				if err := c.SetDeadline(time.Now().Add(time.Minute)); err != nil {
					t.Error(err)
					return
				}
				req := pattern(1+(i*calls+k)%300, i*calls+k)
				got, err := c.Call(req)
				if err != nil || !bytes.Equal(got, req) {
					t.Errorf("client %d call %d: %d bytes, %v", i, k, len(got), err)
					return
				}
			}
		})
	}
	wg.Wait()
	if naps() == before {
		t.Error("no watch napped between the replies")
	}
}

// needNaps skips a test where this kernel cannot nap (ring.Napper).
func needNaps(t *testing.T) {
	t.Helper()
	_, r := newRingPair(t, ring.MinCapacity)
	if !r.Hold() {
		t.Fatal("Hold failed on a new ring")
	}
	defer r.Unhold()
	var n ring.Napper
	if err := n.Nap([]*ring.Reader{r}, time.Microsecond); err != nil {
		t.Skipf("no naps here: %v", err)
	}
}

// TestRingWatchNapSeesCut: a cut set before the watch started to nap, whose
// poke found nothing to wake, keeps the nap from starting; without one
// the nap runs to its end.
func TestRingWatchNapSeesCut(t *testing.T) {
	needNaps(t)
	leakcheck.Check(t)
	rw := &ringWatch{napMax: time.Minute}
	wr := newWatchedRing(t)
	w := &wr.wait
	if w.pinned = w.r.Hold(); !w.pinned {
		t.Fatal("Hold failed on a new ring")
	}
	defer w.r.Unhold()
	now := time.Now()
	w.until = now.Add(time.Minute)
	w.cut.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rw.nap([]*ringWait{w}, now, now.Add(time.Minute))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		rw.poke()
		<-done
		t.Fatal("the watch napped on a cut wait")
	}
	if n := rw.naps.Load(); n != 0 {
		t.Fatalf("%d naps with a cut wait", n)
	}
	w.cut.Store(false)
	start := time.Now()
	rw.nap([]*ringWait{w}, start, start.Add(20*time.Millisecond))
	if d := time.Since(start); d < 20*time.Millisecond || rw.naps.Load() != 1 {
		t.Fatalf("a nap to its end: %v, %d naps; want 20ms and 1", d, rw.naps.Load())
	}
}

// TestSetDeadlinePokesWatch: SetDeadline on a Client on rings ends the nap
// of the process's watch, which may hold its wait; a Client on the socket
// leaves it.
func TestSetDeadlinePokesWatch(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echoRaw), withRings)
	plain, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	onRings := dialRings(t, ts.path)
	defer clientRings.napping.Store(false)
	clientRings.napping.Store(true) // as if its goroutine napped
	if err := plain.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !clientRings.napping.Load() {
		t.Fatal("SetDeadline on a Client without rings woke the watch")
	}
	if err := onRings.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if clientRings.napping.Load() {
		t.Fatal("SetDeadline on a Client on rings left the watch napping")
	}
}
