//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// napRings makes n rings whose readers are held, as a watcher holds them.
func napRings(t *testing.T, n int) ([]*Writer, []*Reader) {
	t.Helper()
	ws, rs := make([]*Writer, n), make([]*Reader, n)
	for i := range n {
		ws[i], rs[i] = newPair(t, MinCapacity, &Options{Spin: -1})
		if !rs[i].Hold() {
			t.Fatal("Hold failed on a new ring")
		}
		t.Cleanup(rs[i].Unhold)
	}
	return ws, rs
}

// nap naps on rs for at most d and says how long it took.
func nap(t *testing.T, n *Napper, rs []*Reader, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	err := n.Nap(rs, d)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("this kernel has no futex_waitv")
	}
	if err != nil {
		t.Fatalf("Nap: %v", err)
	}
	for i, r := range rs {
		if r.s.rpark.Load() != 0 {
			t.Fatalf("Nap left ring %d's parking word raised", i)
		}
	}
	return time.Since(start)
}

// TestNap: a nap on many rings lasts its whole time on empty rings, and
// ends with the first record published on any of them, with a Wake
// (before or during it), and with a writer's Close; a reader not held ends
// it at once. A wake-up that was lost shows as a nap to its end: 10 s,
// where each event comes 5 ms in.
func TestNap(t *testing.T) {
	checkLeaks(t)
	ws, rs := napRings(t, 3)
	var n Napper
	if d := nap(t, &n, rs, 2*time.Millisecond); d < 2*time.Millisecond {
		t.Fatalf("a nap on empty rings ended after %v, before its 2ms", d)
	}
	const long = 10 * time.Second
	later := func(f func()) *sync.WaitGroup {
		var wg sync.WaitGroup
		wg.Go(func() {
			time.Sleep(5 * time.Millisecond)
			f()
		})
		return &wg
	}

	wg := later(func() {
		if err := ws[1].Write([]byte("x")); err != nil {
			t.Error(err)
		}
	})
	if d := nap(t, &n, rs, long); d >= long/2 {
		t.Fatalf("a record on ring 1 did not end the nap: %v", d)
	}
	wg.Wait()
	if !rs[1].Ready() || rs[0].Ready() || rs[2].Ready() {
		t.Fatal("Ready after the nap: want ring 1 only")
	}
	if _, _, err := rs[1].Next(); err != nil {
		t.Fatal(err)
	}
	rs[1].Release()

	wg = later(n.Wake)
	if d := nap(t, &n, rs, long); d >= long/2 {
		t.Fatalf("Wake did not end the nap: %v", d)
	}
	wg.Wait()
	n.Wake()
	if d := nap(t, &n, rs, long); d >= long/2 {
		t.Fatalf("a Wake before the nap did not end it: %v", d)
	}

	rs[2].Unhold()
	if d := nap(t, &n, rs, long); d >= long/2 {
		t.Fatalf("a nap with a reader not held lasted %v", d)
	}
	rs[2].Hold()

	wg = later(func() { ws[0].Close() })
	if d := nap(t, &n, rs, long); d >= long/2 {
		t.Fatalf("the writer's Close did not end the nap: %v", d)
	}
	wg.Wait()
	if _, _, err := rs[0].Next(); err != io.EOF {
		t.Fatalf("Next after the writer's Close: %v, want io.EOF", err)
	}
}

// TestNapScribbledWord: a peer that writes random values into the parking
// word a nap sleeps on ends it early or not at all, but never keeps it
// beyond its time, and the ring still works after.
func TestNapScribbledWord(t *testing.T) {
	checkLeaks(t)
	ws, rs := napRings(t, 2)
	var n Napper
	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			rs[0].s.rpark.Store(rand.Uint32())
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		}
	})
	for range 20 {
		start := time.Now()
		if err := n.Nap(rs, 5*time.Millisecond); errors.Is(err, errors.ErrUnsupported) {
			t.Skip("this kernel has no futex_waitv")
		} else if err != nil {
			t.Fatalf("Nap: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a 5ms nap beside a scribbling peer took %v", d)
		}
	}
	halt()
	rs[0].s.rpark.Store(0)
	if err := ws[0].Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if p, _, err := rs[0].Next(); err != nil || string(p) != "after" {
		t.Fatalf("Next after the scribbling: %q, %v", p, err)
	}
	rs[0].Release()
}

// TestNapSleeps: a nap to its end sleeps in the kernel: its thread uses
// far less processor time than the nap lasts, where a nap that spun (on a
// futex word it failed to raise, say) would use all of it.
func TestNapSleeps(t *testing.T) {
	checkLeaks(t)
	_, rs := napRings(t, 4)
	var n Napper
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	const d = 100 * time.Millisecond
	before := cpu()
	if took := nap(t, &n, rs, d); took < d {
		t.Fatalf("a nap on empty rings ended after %v, before its %v", took, d)
	}
	if used := cpu() - before; used > d/4 {
		t.Fatalf("a nap of %v used %v of processor time", d, used)
	}
}

// TestNapLimit: more readers than MaxNap end a nap at once.
func TestNapLimit(t *testing.T) {
	_, rs := napRings(t, 1)
	many := make([]*Reader, MaxNap+1)
	for i := range many {
		many[i] = rs[0]
	}
	var n Napper
	if d := nap(t, &n, many, 10*time.Second); d >= 5*time.Second {
		t.Fatalf("a nap on %d readers lasted %v", len(many), d)
	}
	if d := nap(t, &n, many[:MaxNap], 2*time.Millisecond); d < 2*time.Millisecond {
		t.Fatalf("a nap on MaxNap readers ended after %v, before its 2ms", d)
	}
}
