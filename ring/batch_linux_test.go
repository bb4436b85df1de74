//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestStageRecords: batches of records of random sizes, marks and "more"
// flags, staged into a small ring while a reader takes them: every record
// arrives whole and in order, with its flags, across the padding at the
// end of the data area, and a full ring takes part of a batch.
func TestStageRecords(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, &Options{Spin: -1})
	rng := rand.New(rand.NewPCG(3, 4))
	type rec struct {
		p          []byte
		more, mark bool
	}
	var recs []rec
	for i := range 5000 {
		n := rng.IntN(300)
		if rng.IntN(50) == 0 {
			n = w.MaxRecord()
		}
		recs = append(recs, rec{message(nil, uint64(i), n), rng.IntN(3) == 0, rng.IntN(2) == 0})
	}
	var wg sync.WaitGroup
	var werr error
	partial := 0
	wg.Go(func() {
		var batch []byte
		for i := 0; i < len(recs); {
			batch = batch[:0]
			for k := rng.IntN(40); k >= 0 && i < len(recs); k-- {
				batch = AppendRecord(batch, recs[i].p, recs[i].more, recs[i].mark)
				i++
			}
			for len(batch) > 0 {
				n, err := w.StageRecords(batch)
				if err != nil {
					werr = err
					return
				}
				batch = batch[n:]
				if len(batch) > 0 {
					// Full: the reader makes room for what it has seen.
					partial++
					w.Flush()
					time.Sleep(10 * time.Microsecond)
				}
			}
			w.Flush()
		}
	})
	r.SetDeadline(time.Now().Add(20 * time.Second))
	for i := 0; i < len(recs); {
		p, more, err := r.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := recs[i]
		if !bytes.Equal(p, want.p) || more != want.more || r.Marked() != want.mark {
			t.Fatalf("record %d: %d bytes (equal %v), more %v, marked %v; want %d bytes, %v, %v",
				i, len(p), bytes.Equal(p, want.p), more, r.Marked(), len(want.p), want.more, want.mark)
		}
		r.Release()
		i++
	}
	wg.Wait()
	if werr != nil {
		t.Fatal(werr)
	}
	if partial == 0 {
		t.Error("no batch met a full ring")
	}
}

// TestStageRecordsInvalid: records AppendRecord could not have made for
// the ring are refused with the ones before them staged; a reservation
// held, a closed ring and a closed reader are refused as Reserve refuses
// them.
func TestStageRecordsInvalid(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	good := AppendRecord(nil, []byte("ok"), false, true)
	for name, bad := range map[string][]byte{
		"too long":    AppendRecord(nil, make([]byte, w.MaxRecord()+1), false, false),
		"cut short":   AppendRecord(nil, []byte("abcdef"), false, false)[:10],
		"bad flags":   {1, 0, 0, 0, flagPad, 0, 0, 0, 'x', 0, 0, 0, 0, 0, 0, 0},
		"half header": {1, 0, 0},
	} {
		n, err := w.StageRecords(append(append([]byte(nil), good...), bad...))
		if n != len(good) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: StageRecords = %d, %v; want %d, ErrInvalid", name, n, err, len(good))
		}
	}
	w.Flush()
	r.SetDeadline(time.Now().Add(time.Second))
	for range 4 {
		if p, _, err := r.Next(); err != nil || string(p) != "ok" || !r.Marked() {
			t.Fatalf("staged record: %q, %v, marked %v", p, err, r.Marked())
		}
		r.Release()
	}
	if _, err := w.Reserve(1); err != nil {
		t.Fatal(err)
	}
	if _, err := w.StageRecords(good); !errors.Is(err, ErrInvalid) {
		t.Fatalf("StageRecords with a reservation held: %v", err)
	}
	w.Commit(0, false)
	r.Close()
	if _, err := w.StageRecords(good); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("StageRecords after the reader closed: %v", err)
	}
	w.Close()
	if _, err := w.StageRecords(good); !errors.Is(err, ErrClosed) {
		t.Fatalf("StageRecords after Close: %v", err)
	}
}

// FuzzStageRecords: whatever bytes the owner passes as a batch, the ring
// takes only records the reader accepts: no panic, and the reader finds
// no corruption in what was published.
func FuzzStageRecords(f *testing.F) {
	f.Add(AppendRecord(AppendRecord(nil, []byte("hello"), true, true), nil, false, false))
	f.Add([]byte{200, 0, 0, 0, 0, 0, 0, 0})
	f.Add(bytes.Repeat(AppendRecord(nil, make([]byte, 900), false, false), 6))
	f.Fuzz(func(t *testing.T, batch []byte) {
		_, s, _ := heapRing(MinCapacity)
		w, err := newWriter(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, err := w.StageRecords(batch)
		if n > len(batch) || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Fatalf("StageRecords = %d, %v for %d bytes", n, err, len(batch))
		}
		w.Flush()
		r, err := newReader(s, &Options{Spin: -1})
		if err != nil {
			t.Fatal(err)
		}
		r.SetDeadline(time.Now().Add(-time.Second))
		for {
			_, _, err := r.Next()
			if errors.Is(err, ErrTimeout) {
				break
			}
			if err != nil {
				t.Fatalf("the reader of a staged batch: %v", err)
			}
			r.Release()
		}
	})
}

// TestReleaseNext: the lease passes from record to record while records
// are there, nothing is held once none is, and a writer waiting for room
// is woken by the records given back, though the head reaches it only in
// steps.
func TestReleaseNext(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, &Options{Spin: -1})
	if _, _, ok := r.ReleaseNext(); ok {
		t.Fatal("ReleaseNext without a lease returned a record")
	}
	for i := range 3 {
		b, _ := w.Reserve(1)
		b[0] = byte('a' + i)
		w.Commit(1, false)
	}
	r.SetDeadline(time.Now().Add(10 * time.Second))
	p, _, err := r.Next()
	if err != nil || string(p) != "a" {
		t.Fatalf("Next = %q, %v", p, err)
	}
	for _, want := range []string{"b", "c"} {
		p, _, ok := r.ReleaseNext()
		if !ok || string(p) != want {
			t.Fatalf("ReleaseNext = %q, %v; want %q", p, ok, want)
		}
	}
	if _, _, ok := r.ReleaseNext(); ok {
		t.Fatal("ReleaseNext on a dry ring returned a record")
	}
	if got := r.s.head.Load(); got != r.head {
		t.Fatalf("dry ring: shared head %d, reader's %d", got, r.head)
	}

	// A writer that fills the ring waits on the futex for room; the
	// reader gives records back one at a time.
	const n = 200
	var wg sync.WaitGroup
	wg.Go(func() {
		w.SetDeadline(time.Now().Add(10 * time.Second))
		for i := range n {
			b, err := w.Reserve(200)
			if err != nil {
				t.Errorf("Reserve %d: %v", i, err)
				return
			}
			b[0] = byte(i)
			w.Commit(200, false)
		}
	})
	p, _, err = r.Next()
	for i := 0; i < n; i++ {
		if err != nil || p[0] != byte(i) {
			t.Fatalf("record %d: %v, %v", i, p[:min(len(p), 1)], err)
		}
		if i%7 == 0 {
			time.Sleep(100 * time.Microsecond) // the writer parks meanwhile
		}
		var ok bool
		if p, _, ok = r.ReleaseNext(); !ok && i < n-1 {
			p, _, err = r.Next()
		}
	}
	wg.Wait()
	w.Close()
	if _, _, ok := r.ReleaseNext(); ok {
		t.Fatal("a record after the last")
	}
}

// TestNoLostWakeUpBatched is TestNoLostWakeUp for batches: the writer
// stages batches of random sizes (StageRecords) and, when the ring is
// full, arms it and waits on a doorbell that the reader rings as it gives
// records back in steps; the reader takes records with Next and passes
// its lease on with ReleaseNext, parking on the futex when the ring is
// dry. Both sides pause at random. A lost wake-up stalls one side past a
// deadline that each side moves on as it progresses.
func TestNoLostWakeUpBatched(t *testing.T) {
	checkLeaks(t)
	unboundSleeps(t)
	n := *stressMessages
	if testing.Short() {
		n = min(n, 20_000)
	}
	bellW, ringW, err := NewDoorbell() // the writer waits on bellW; the reader rings ringW
	if err != nil {
		t.Fatal(err)
	}
	defer bellW.Close()
	f, err := Create(MinCapacity)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, &Options{Spin: time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(f, &Options{Spin: time.Microsecond, Doorbell: ringW})
	f.Close()
	ringW.Close()
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	const stall = 30 * time.Second
	pause := stressPause
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(5, 1))
		var msg [64]byte
		var batch []byte
		for i := 0; i < n; {
			pause(rng)
			batch = batch[:0]
			for k := 1 + rng.IntN(40); k > 0 && i < n; k-- {
				binary.LittleEndian.PutUint64(msg[:], uint64(i))
				batch = AppendRecord(batch, msg[:8+rng.IntN(57)], false, i%2 == 0)
				i++
			}
			for len(batch) > 0 {
				m, err := w.StageRecords(batch)
				if err != nil {
					done <- err
					return
				}
				batch = batch[m:]
				if len(batch) == 0 {
					break
				}
				next := int(binary.LittleEndian.Uint32(batch))
				for !w.Arm(next) {
					if ok, err := bellW.Wait(stall); err != nil || !ok {
						done <- fmt.Errorf("doorbell wait for room before message %d: %v, %v (a lost wake-up)", i, ok, err)
						return
					}
					if err := bellW.Drain(); err != nil {
						done <- err
						return
					}
				}
			}
			w.Flush()
		}
		done <- nil
	}()
	rng := rand.New(rand.NewPCG(5, 2))
	for i := 0; i < n; {
		r.SetDeadline(time.Now().Add(stall))
		p, _, err := r.Next()
		for ; err == nil; i++ {
			if len(p) < 8 || binary.LittleEndian.Uint64(p) != uint64(i) || r.Marked() != (i%2 == 0) {
				t.Fatalf("message %d: got %x, marked %v", i, p, r.Marked())
			}
			pause(rng)
			var ok bool
			if p, _, ok = r.ReleaseNext(); !ok {
				i++
				break
			}
		}
		if err != nil {
			t.Fatalf("message %d of %d: %v (a lost wake-up)", i, n, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("writer: %v", err)
	}
}

// TestReleasedRoomSeen: a reader that gives records back and then stops
// calling into the ring (its owner busy elsewhere) leaves the room it gave
// back visible to a writer, parked on the futex or armed, at once.
func TestReleasedRoomSeen(t *testing.T) {
	checkLeaks(t)
	for _, mode := range []string{"futex", "arm"} {
		for _, next := range []bool{false, true} {
			w, r := newPair(t, MinCapacity, &Options{Spin: -1})
			for w.Ready(64) {
				b, err := w.Reserve(64)
				if err != nil {
					t.Fatal(err)
				}
				w.Commit(len(b), false)
			}
			r.SetDeadline(time.Now().Add(time.Second))
			if _, _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if next {
					if _, _, ok := r.ReleaseNext(); !ok {
						t.Fatal("ReleaseNext on a full ring took nothing")
					}
				} else {
					r.Release()
					if _, _, err := r.Next(); err != nil {
						t.Fatal(err)
					}
				}
			}
			r.Release() // four records given back, then the reader stops
			switch mode {
			case "futex":
				w.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := w.Reserve(64); err != nil {
					t.Fatalf("%s, ReleaseNext %v: Reserve with room given back: %v", mode, next, err)
				}
				w.Commit(0, false)
			case "arm":
				if !w.Arm(64) {
					t.Fatalf("%s, ReleaseNext %v: Arm found no room given back", mode, next)
				}
			}
		}
	}
}

// TestReaderReady: Ready says whether Next would return at once, and
// never arms the ring: a commit after a false Ready wakes nothing.
func TestReaderReady(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, &Options{Spin: -1})
	if r.Ready() {
		t.Fatal("Ready on an empty ring")
	}
	if got := r.s.rpark.Load(); got != 0 {
		t.Fatalf("Ready armed the ring: parking word %d", got)
	}
	b, _ := w.Reserve(1)
	b[0] = 'a'
	w.Commit(1, false)
	if !r.Ready() {
		t.Fatal("not Ready with a record committed")
	}
	r.SetDeadline(time.Now().Add(10 * time.Second))
	if p, _, err := r.Next(); err != nil || string(p) != "a" {
		t.Fatalf("Next = %q, %v", p, err)
	}
	if !r.Ready() {
		t.Fatal("not Ready with a lease held (Next returns ErrInvalid at once)")
	}
	r.Release()
	if r.Ready() {
		t.Fatal("Ready on a drained ring")
	}
	w.Close()
	if !r.Ready() {
		t.Fatal("not Ready after the writer closed (Next returns io.EOF at once)")
	}
	r.Close()
	if !r.Ready() {
		t.Fatal("not Ready after Close (Next returns ErrClosed at once)")
	}
}

// TestSpinNext: SpinNext takes the record a spin finds, flags and mark
// as Next gives them, and holds nothing when it takes none: on an empty
// ring, with a lease held, on a corrupt header (Next then reports it) and
// once the side is closed, when the mapping goes with the last Release.
func TestSpinNext(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, &Options{Spin: 50 * time.Microsecond})
	if _, _, ok := r.SpinNext(); ok || r.lease != 0 {
		t.Fatalf("SpinNext on an empty ring: ok %v, lease %d", ok, r.lease)
	}
	b, _ := w.Reserve(2)
	copy(b, "ab")
	w.Mark()
	w.Commit(2, true)
	b, _ = w.Reserve(1)
	b[0] = 'c'
	w.Commit(1, false)
	p, more, ok := r.SpinNext()
	if !ok || string(p) != "ab" || !more || !r.Marked() {
		t.Fatalf("SpinNext = %q, more %v, ok %v, marked %v; want \"ab\", more, marked", p, more, ok, r.Marked())
	}
	if _, _, ok := r.SpinNext(); ok {
		t.Fatal("SpinNext with a lease held took a record")
	}
	r.Release()
	p, more, ok = r.SpinNext()
	if !ok || string(p) != "c" || more || r.Marked() {
		t.Fatalf("SpinNext = %q, more %v, ok %v, marked %v; want \"c\"", p, more, ok, r.Marked())
	}
	r.Release()
	if got := r.s.head.Load(); got != r.head {
		t.Fatalf("shared head %d, reader's %d", got, r.head)
	}

	// A scribbled header: nothing taken, and Next says why.
	putRecord(r.s, r.head, 1<<30, 0)
	if _, _, ok := r.SpinNext(); ok || r.lease != 0 {
		t.Fatal("SpinNext took an oversized record")
	}
	var ce *CorruptError
	if _, _, err := r.Next(); !errors.As(err, &ce) {
		t.Fatalf("Next after it: %v, want a CorruptError", err)
	}

	// Closed from another goroutine while a taken record is held: the
	// mapping stays until Release, then goes (checkLeaks).
	w2, r2 := newPair(t, MinCapacity, &Options{Spin: 50 * time.Microsecond})
	if err := w2.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	p, _, ok = r2.SpinNext()
	if !ok || string(p) != "x" {
		t.Fatalf("SpinNext = %q, %v", p, ok)
	}
	done := make(chan struct{})
	go func() { r2.Close(); close(done) }()
	<-done
	if p[0] != 'x' {
		t.Fatal("the record changed under its lease")
	}
	r2.Release()
	if _, _, ok := r2.SpinNext(); ok {
		t.Fatal("SpinNext after Close took a record")
	}
}
