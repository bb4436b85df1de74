//go:build !race && (386 || amd64 || arm64 || loong64 || ppc64le || riscv64)

package ring

import (
	"sync"
	"testing"
	"time"
)

// TestNoAllocations: writing and reading records, copied or in place,
// allocates nothing; nor does a round trip through another goroutine
// whose sides park on the futex.
func TestNoAllocations(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, 64<<10, nil)
	msg := make([]byte, 64)
	buf := make([]byte, 0, 10000)
	big := make([]byte, 10000)
	if n := testing.AllocsPerRun(1000, func() {
		w.Write(msg)
		buf, _ = r.ReadMessage(buf[:0], len(msg))
		w.Write(big) // several records
		buf, _ = r.ReadMessage(buf[:0], len(big))
		b, _ := w.Reserve(64)
		copy(b, msg)
		w.Commit(len(b), false)
		r.Next()
		r.Release()
	}); n != 0 {
		t.Errorf("write and read: %v allocations, want 0", n)
	}

	// A round trip with parking on both sides.
	opts := &Options{Spin: -1}
	w, r = newPair(t, 64<<10, opts)
	sw, sr := newPair(t, 64<<10, opts)
	var wg sync.WaitGroup
	wg.Go(func() { echo(r, sw) })
	if n := testing.AllocsPerRun(1000, func() {
		w.Write(msg)
		buf, _ = sr.ReadMessage(buf[:0], len(msg))
	}); n != 0 {
		t.Errorf("parked round trip: %v allocations, want 0", n)
	}
	w.Close()
	wg.Wait()
}

// TestArmNoAllocations: arming and ringing allocate nothing.
func TestArmNoAllocations(t *testing.T) {
	checkLeaks(t)
	wait, bell, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	defer wait.Close()
	defer bell.Close()
	w, r := newPair(t, MinCapacity, &Options{Doorbell: bell})
	msg := []byte("ping")
	if n := testing.AllocsPerRun(1000, func() {
		r.Arm() // empty: arms
		w.Write(msg)
		r.Arm()
		r.Next()
		r.Release()
		wait.Drain()
	}); n != 0 {
		t.Errorf("%v allocations per armed round, want 0", n)
	}
}

// TestNapNoAllocations: a nap on held rings, to its end or ended by a
// record, allocates nothing.
func TestNapNoAllocations(t *testing.T) {
	checkLeaks(t)
	ws, rs := napRings(t, 2)
	var n Napper
	if err := n.Nap(rs, time.Microsecond); err != nil {
		t.Skipf("Nap: %v", err)
	}
	msg := []byte("x")
	if a := testing.AllocsPerRun(200, func() {
		n.Nap(rs, 20*time.Microsecond)
		ws[1].Write(msg)
		n.Nap(rs, time.Second)
		rs[1].Next()
		rs[1].Release()
	}); a != 0 {
		t.Errorf("Nap: %v allocations, want 0", a)
	}
}
