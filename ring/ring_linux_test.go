//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// message builds the i-th test message: its index, then bytes derived
// from it, n bytes in all.
func message(buf []byte, i uint64, n int) []byte {
	buf = buf[:0]
	for len(buf) < n {
		buf = binary.LittleEndian.AppendUint64(buf, i*0x9e3779b97f4a7c15+uint64(len(buf)))
	}
	return buf[:n]
}

// TestMessagesInOrder streams messages of random sizes, from empty to
// several times the data area, and checks every byte and the order. Small
// capacities make records wrap and pad often.
func TestMessagesInOrder(t *testing.T) {
	checkLeaks(t)
	for _, capacity := range []int{MinCapacity, 64 << 10} {
		for _, spin := range []time.Duration{0, -1} {
			w, r := newPair(t, capacity, &Options{Spin: spin})
			rng := rand.New(rand.NewPCG(uint64(capacity), 1))
			sizes := make([]int, 3000)
			for i := range sizes {
				switch rng.IntN(10) {
				case 0:
					sizes[i] = 0
				case 1:
					sizes[i] = rng.IntN(4 * capacity)
				default:
					sizes[i] = rng.IntN(300)
				}
			}
			var wg sync.WaitGroup
			var werr error
			wg.Go(func() {
				var buf []byte
				for i, n := range sizes {
					buf = message(buf, uint64(i), n)
					if werr = w.Write(buf); werr != nil {
						return
					}
				}
				w.Close()
			})
			var got, want []byte
			for i, n := range sizes {
				var err error
				got, err = r.ReadMessage(got[:0], 1<<30)
				if err != nil {
					t.Fatalf("capacity %d: message %d: %v", capacity, i, err)
				}
				want = message(want, uint64(i), n)
				if !bytes.Equal(got, want) {
					t.Fatalf("capacity %d: message %d: got %d bytes, want %d (or different bytes)", capacity, i, len(got), n)
				}
			}
			if _, err := r.ReadMessage(got[:0], 1<<30); err != io.EOF {
				t.Fatalf("after the writer closed: %v, want io.EOF", err)
			}
			wg.Wait()
			if werr != nil {
				t.Fatal(werr)
			}
		}
	}
}

// TestZeroCopy writes a record in place and reads it in place.
func TestZeroCopy(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	b, err := w.Reserve(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 100 || cap(b) != 100 {
		t.Fatalf("reservation has len %d cap %d, want 100 100", len(b), cap(b))
	}
	n := copy(b, "in place")
	if _, err := w.Reserve(1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second Reserve before Commit: %v, want ErrInvalid", err)
	}
	if err := w.Commit(n, false); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(0, false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Commit without Reserve: %v, want ErrInvalid", err)
	}
	p, more, err := r.Next()
	if err != nil || more || string(p) != "in place" {
		t.Fatalf("Next = %q, %v, %v; want \"in place\", false, nil", p, more, err)
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Next with a lease held: %v, want ErrInvalid", err)
	}
	r.Release()
	r.Release() // a second Release does nothing
	if _, err := w.Reserve(w.MaxRecord() + 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Reserve over MaxRecord: %v, want ErrTooLarge", err)
	}
	if w.MaxRecord() != MinCapacity/2-recordHeader || r.MaxRecord() != w.MaxRecord() {
		t.Fatalf("MaxRecord %d and %d, want %d", w.MaxRecord(), r.MaxRecord(), MinCapacity/2-recordHeader)
	}
}

// TestFullRingDeadline: a writer whose reader does not read waits for
// space until its deadline; a reader of an empty ring waits until its own.
func TestFullRingDeadline(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	const wait = 50 * time.Millisecond
	w.SetDeadline(time.Now().Add(wait))
	start := time.Now()
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = w.Reserve(1000)
		if err == nil {
			err = w.Commit(1000, false)
		}
	}
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing into a full ring: %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el < wait {
		t.Fatalf("gave up after %v, before the %v deadline", el, wait)
	}
	// Never overwritten: the records committed before are all there.
	n := 0
	r.SetDeadline(time.Now().Add(wait))
	for {
		p, _, err := r.Next()
		if errors.Is(err, ErrTimeout) {
			break
		}
		if err != nil || len(p) != 1000 {
			t.Fatalf("record %d: %d bytes, %v", n, len(p), err)
		}
		r.Release()
		n++
	}
	if n != 4 { // 4096 bytes hold four 1008-byte records
		t.Fatalf("read %d records back, want 4", n)
	}
	// A deadline in the past fails at once; clearing it waits again.
	r.SetDeadline(time.Now().Add(-time.Second))
	if _, _, err := r.Next(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("past deadline: %v", err)
	}
	r.SetDeadline(time.Time{})
	wrote := make(chan error)
	go func() {
		time.Sleep(10 * time.Millisecond)
		w.SetDeadline(time.Time{})
		wrote <- w.Write([]byte("late"))
	}()
	p, _, err := r.Next()
	if err != nil || string(p) != "late" {
		t.Fatalf("after clearing the deadline: %q, %v", p, err)
	}
	r.Release()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// TestCloseWakesParked: Close from another goroutine ends a parked call
// at once, on either side.
func TestCloseWakesParked(t *testing.T) {
	checkLeaks(t)
	t.Run("reader", func(t *testing.T) {
		_, r := newPair(t, MinCapacity, &Options{Spin: -1})
		done := make(chan error)
		go func() { _, _, err := r.Next(); done <- err }()
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		r.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("parked Next after Close: %v, want ErrClosed", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("woke %v after Close", el)
		}
		if _, _, err := r.Next(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
		if err := r.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close: %v, want ErrClosed", err)
		}
	})
	t.Run("writer", func(t *testing.T) {
		w, _ := newPair(t, MinCapacity, &Options{Spin: -1})
		big := make([]byte, 3*MinCapacity)
		done := make(chan error)
		go func() { done <- w.Write(big) }()
		time.Sleep(20 * time.Millisecond)
		w.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Fatalf("parked Write after Close: %v, want ErrClosed", err)
		}
	})
}

// TestPeerClose: each side learns that the other closed.
func TestPeerClose(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	if err := w.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, err := r.ReadMessage(nil, 100)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read before EOF: %q, %v", got, err)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the writer closed: %v, want io.EOF", err)
	}

	w, r = newPair(t, MinCapacity, &Options{Spin: -1})
	done := make(chan error)
	go func() { done <- w.Write(make([]byte, 3*MinCapacity)) }()
	time.Sleep(20 * time.Millisecond)
	r.Close()
	if err := <-done; !errors.Is(err, ErrBrokenMessage) {
		t.Fatalf("writer parked inside a message when the reader closed: %v, want ErrBrokenMessage", err)
	}
	if err := w.Write([]byte("x")); !errors.Is(err, ErrBrokenMessage) {
		t.Fatalf("Write after a broken message: %v", err)
	}

	w, r = newPair(t, MinCapacity, nil)
	r.Close()
	if err := w.Write([]byte("x")); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("Write after the reader closed: %v, want ErrPeerClosed", err)
	}
}

// TestReadMessageLimits: a message over the limit is dropped whole and the
// next one is read; a message cut by a deadline is skipped by the next
// call; a writer that breaks a message gives io.ErrUnexpectedEOF.
func TestReadMessageLimits(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	wrote := make(chan error, 1)
	go func() {
		err := w.Write(bytes.Repeat([]byte("a"), 5000))
		if err == nil {
			err = w.Write([]byte("small"))
		}
		wrote <- err
	}()
	got, err := r.ReadMessage(nil, 4999)
	if !errors.Is(err, ErrTooLarge) || len(got) != 0 {
		t.Fatalf("over the limit: %d bytes, %v; want ErrTooLarge", len(got), err)
	}
	got, err = r.ReadMessage(got, 4999)
	if err != nil || string(got) != "small" {
		t.Fatalf("after an oversized message: %q, %v", got, err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}

	// The first record of a message, then a pause past the reader's
	// deadline, then the rest and another message.
	b, _ := w.Reserve(10)
	copy(b, "0123456789")
	w.Commit(10, true)
	r.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.ReadMessage(nil, 100); !errors.Is(err, ErrTimeout) {
		t.Fatalf("cut message: %v, want ErrTimeout", err)
	}
	r.SetDeadline(time.Time{})
	b, _ = w.Reserve(5)
	copy(b, "abcde")
	w.Commit(5, false)
	w.Write([]byte("next"))
	got, err = r.ReadMessage(nil, 100)
	if err != nil || string(got) != "next" {
		t.Fatalf("after a cut message: %q, %v; want \"next\"", got, err)
	}

	// The writer's deadline passes inside a message.
	w.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if err := w.Write(make([]byte, 3*MinCapacity)); !errors.Is(err, ErrBrokenMessage) {
		t.Fatalf("writer cut by its deadline: %v, want ErrBrokenMessage", err)
	}
	if _, err := r.ReadMessage(nil, 1<<20); err != io.ErrUnexpectedEOF {
		t.Fatalf("reading a broken message: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestUnmapAfterLastUse: Close from another goroutine while the owner
// holds a lease or reservation unmaps only when the owner lets go, once.
func TestUnmapAfterLastUse(t *testing.T) {
	checkLeaks(t)
	_, s, unmapped := heapRing(MinCapacity)
	w, err := newWriter(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, s2, unmapped2 := heapRing(MinCapacity)
	r, err := newReader(s2, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Reserve(8)
	if err != nil {
		t.Fatal(err)
	}
	copy(s2.data[recordHeader:], "8 bytes!")
	putRecord(s2, 0, 8, 0)
	p, _, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.Close()
	if unmapped.Load() != 0 || unmapped2.Load() != 0 {
		t.Fatal("unmapped while a reservation or lease was held")
	}
	copy(b, p) // both still mapped
	if err := w.Commit(8, false); err != ErrClosed {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
	if word64(s.data, 0).Load() != 0 {
		t.Fatal("a record reserved before Close was published after it")
	}
	r.Release()
	if unmapped.Load() != 1 || unmapped2.Load() != 1 {
		t.Fatalf("unmapped %d and %d times after the last use, want once each", unmapped.Load(), unmapped2.Load())
	}
	w.Close()
	r.Close()
	if unmapped.Load() != 1 || unmapped2.Load() != 1 {
		t.Fatal("a second Close unmapped again")
	}
}

// TestHold: Ready under Hold takes no reference of its own (the
// reference count does not move), sees records and the end of the side,
// and keeps the mapping through a Close from another goroutine until
// Unhold, which unmaps it once; a Hold of a closed side holds nothing.
func TestHold(t *testing.T) {
	checkLeaks(t)
	_, s, unmapped := heapRing(MinCapacity)
	r, err := newReader(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Hold() {
		t.Fatal("Hold of an open side failed")
	}
	if r.Hold() {
		t.Fatal("a second Hold took another reference")
	}
	refs := s.life.v.Load()
	if r.Ready() {
		t.Fatal("Ready on an empty ring")
	}
	putRecord(s, 0, 8, 0)
	if !r.Ready() {
		t.Fatal("Ready missed a published record")
	}
	if got := s.life.v.Load(); got != refs {
		t.Fatalf("Ready under Hold moved the reference count from %d to %d", refs, got)
	}
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	<-done
	if unmapped.Load() != 0 {
		t.Fatal("unmapped while held")
	}
	if !r.Ready() {
		t.Fatal("a closed side is not Ready under Hold")
	}
	r.Unhold()
	if unmapped.Load() != 1 {
		t.Fatalf("unmapped %d times after Unhold, want once", unmapped.Load())
	}
	r.Unhold() // nothing held: nothing happens
	if r.Hold() {
		t.Fatal("Hold of a closed side succeeded")
	}
	if !r.Ready() || unmapped.Load() != 1 {
		t.Fatalf("after Close and Unhold: Ready false or %d unmaps", unmapped.Load())
	}
}

// TestStagedRecords: staged records stay invisible until Flush or the next
// Commit, and a writer that runs out of room publishes what it staged
// instead of waiting for a reader that cannot see it.
func TestStagedRecords(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	for i := range 3 {
		b, err := w.Reserve(1)
		if err != nil {
			t.Fatal(err)
		}
		b[0] = byte('a' + i)
		if err := w.Stage(1, false); err != nil {
			t.Fatal(err)
		}
	}
	r.SetDeadline(time.Now().Add(-time.Second))
	if _, _, err := r.Next(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Next before Flush: %v, want ErrTimeout", err)
	}
	w.Flush()
	for i := range 3 {
		p, _, err := r.Next()
		if err != nil || string(p) != string(rune('a'+i)) {
			t.Fatalf("record %d after Flush: %q, %v", i, p, err)
		}
		r.Release()
	}
	if err := w.Stage(0, false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Stage without Reserve: %v", err)
	}

	// Ten rings' worth of staged records, never flushed by the caller.
	const n = 10 * MinCapacity / 64
	r.SetDeadline(time.Time{})
	done := make(chan int)
	go func() {
		got := 0
		for got < n {
			if _, _, err := r.Next(); err != nil {
				break
			}
			r.Release()
			got++
		}
		done <- got
	}()
	w.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		b, err := w.Reserve(56)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		w.Stage(len(b), false)
	}
	w.Flush()
	if got := <-done; got != n {
		t.Fatalf("reader got %d of %d staged records", got, n)
	}
}

// TestMarks: a mark set on a reservation reaches the reader with that
// record alone, committed or staged, also on a record that pads past the
// end of the data area; a mark without a reservation, or on a reservation
// that Close dropped, marks nothing.
func TestMarks(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	w.Mark() // no reservation: ignored
	// 200 records of 100 bytes wrap the 4 KiB area several times.
	want := make([]bool, 200)
	for i := range want {
		want[i] = i%3 == 0
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i, m := range want {
			b, err := w.Reserve(100)
			if err != nil {
				return
			}
			b[0] = byte(i)
			if m {
				w.Mark()
			}
			if i%2 == 0 {
				err = w.Stage(len(b), i%5 == 0)
			} else {
				err = w.Commit(len(b), false)
			}
			if err != nil {
				return
			}
		}
		w.Flush()
	})
	r.SetDeadline(time.Now().Add(10 * time.Second))
	for i, m := range want {
		p, more, err := r.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if p[0] != byte(i) || r.Marked() != m || more != (i%2 == 0 && i%5 == 0) {
			t.Fatalf("record %d: first byte %d, marked %v, more %v; want %d, %v, %v", i, p[0], r.Marked(), more, byte(i), m, i%2 == 0 && i%5 == 0)
		}
		r.Release()
	}
	wg.Wait()

	// A mark on a reservation dropped by Close does not outlive it.
	if _, err := w.Reserve(8); err != nil {
		t.Fatal(err)
	}
	w.Mark()
	w.Close()
	if err := w.Commit(8, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
	if w.mark {
		t.Fatal("the dropped reservation's mark is still set")
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next after the writer closed: %v, want io.EOF", err)
	}
}

// TestSetDeadlineWakesParked: a deadline set while a side is parked with
// none takes effect at once.
func TestSetDeadlineWakesParked(t *testing.T) {
	checkLeaks(t)
	_, r := newPair(t, MinCapacity, &Options{Spin: -1})
	done := make(chan error)
	go func() { _, _, err := r.Next(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	r.SetDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-done:
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("parked Next after SetDeadline: %v, want ErrTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("parked Next still waiting 5 s after a 10 ms deadline was set")
	}
}

// TestStolenWakeUp: a peer that takes the parking word back from a
// sleeping side, so that Close finds nobody parked and wakes nobody, delays
// Close's notice by at most one bounded sleep (maxSleep).
func TestStolenWakeUp(t *testing.T) {
	checkLeaks(t)
	_, r := newPair(t, MinCapacity, &Options{Spin: -1})
	r.s.life.acquire() // keeps the mapping for the thief until it is done
	var thief sync.WaitGroup
	stop := make(chan struct{})
	thief.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Let the reader fall asleep on the word, then clear it: its
			// futex sleep goes on, and a wake-up that checks the word
			// first (Close's) skips it.
			time.Sleep(time.Millisecond)
			r.s.rpark.CompareAndSwap(parkedFutex, 0)
		}
	})
	done := make(chan error)
	go func() { _, _, err := r.Next(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("parked Next after Close: %v, want ErrClosed", err)
		}
		t.Logf("woke %v after Close", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("parked Next still waiting 5 s after Close")
	}
	close(stop)
	thief.Wait()
	r.s.release()
}

// TestWriterTaken: Taken is true only while the reader has given back
// every published record: not while one is unread or leased, nor once the
// writer's side is closed; staged records do not count until published.
func TestWriterTaken(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	if !w.Taken() {
		t.Fatal("Taken false on a fresh ring")
	}
	if err := w.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if w.Taken() {
		t.Fatal("Taken true with a record unread")
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if w.Taken() {
		t.Fatal("Taken true with a record leased")
	}
	r.Release()
	if !w.Taken() {
		t.Fatal("Taken false with every record given back")
	}
	b, err := w.Reserve(3)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, "two")
	if err := w.Stage(3, false); err != nil {
		t.Fatal(err)
	}
	if !w.Taken() {
		t.Fatal("Taken false for a record staged, not published")
	}
	w.Flush()
	if w.Taken() {
		t.Fatal("Taken true with a published record unread")
	}
	w.Close()
	if w.Taken() {
		t.Fatal("Taken true after Close")
	}
}

// TestWriterTakenTo: TakenTo(pos) says whether the records before pos are
// all given back, whatever follows them.
func TestWriterTakenTo(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	if err := w.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	one := w.Published()
	if err := w.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	if w.TakenTo(one) {
		t.Fatal("TakenTo true with the record before it unread")
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if w.TakenTo(one) {
		t.Fatal("TakenTo true with the record before it leased")
	}
	r.Release()
	if !w.TakenTo(one) || w.TakenTo(w.Published()) || w.Taken() {
		t.Fatal("the first record given back: TakenTo it should be true, to the second false")
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.Release()
	if !w.TakenTo(w.Published()) {
		t.Fatal("TakenTo false with every record given back")
	}
	w.Close()
	if w.TakenTo(one) {
		t.Fatal("TakenTo true after Close")
	}
}

// TestReaderDrop: a record dropped is not given back: the writer does not
// count it as taken, and the next Next returns it again; Release then
// gives it back. Dropping holds nothing (checkLeaks: no reference left).
func TestReaderDrop(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, nil)
	if err := w.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		p, _, err := r.Next()
		if err != nil || string(p) != "one" {
			t.Fatalf("Next: %q, %v", p, err)
		}
		r.Drop()
		if w.Taken() {
			t.Fatal("Taken true for a dropped record")
		}
	}
	r.Drop() // no lease: nothing
	if p, _, err := r.Next(); err != nil || string(p) != "one" {
		t.Fatalf("Next after Drop: %q, %v", p, err)
	}
	r.Release()
	if !w.Taken() {
		t.Fatal("Taken false once the record was given back")
	}
}

// TestWriteCloseRace: Close from another goroutine while Write copies its
// messages in: a Write that returns nil delivered its message, and one
// that fails delivered none, whichever step Close interrupted.
func TestWriteCloseRace(t *testing.T) {
	checkLeaks(t)
	msg := make([]byte, 40<<10) // one record, and a copy long enough to be caught in
	for round := range 100 {
		w, r := newPair(t, 256<<10, nil)
		wrote := make(chan int, 1)
		go func() {
			n := 0
			for w.Write(msg) == nil {
				n++
			}
			wrote <- n
		}()
		time.Sleep(time.Duration(round%20) * 10 * time.Microsecond)
		w.Close()
		var got int
		buf := make([]byte, 0, len(msg))
		for {
			m, err := r.ReadMessage(buf[:0], len(msg))
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("round %d: read after %d messages: %v", round, got, err)
			}
			if len(m) != len(msg) {
				t.Fatalf("round %d: message %d is %d bytes, want %d", round, got, len(m), len(msg))
			}
			got++
		}
		// The Write that Close cut may have published its record anyway
		// (Commit then returns ErrClosed): one message more at most.
		if n := <-wrote; got != n && got != n+1 {
			t.Fatalf("round %d: %d Writes returned nil, the reader got %d messages", round, n, got)
		}
		r.Close()
	}
}

// TestEndlessMessageDeadline: a writer that never ends its message keeps
// records coming, so Next never waits; ReadMessage still stops at the
// deadline, and so does the next call, which skips the rest.
func TestEndlessMessageDeadline(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, 64<<10, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := w.Reserve(8)
			if err != nil {
				return
			}
			w.Commit(len(b), true)
		}
	})
	defer func() {
		close(stop)
		w.Close() // the writer may be waiting for room
		wg.Wait()
	}()
	for i := range 2 {
		r.SetDeadline(time.Now().Add(50 * time.Millisecond))
		done := make(chan error)
		go func() { _, err := r.ReadMessage(nil, 1<<30); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("call %d: %v, want ErrTimeout", i, err)
			}
		case <-time.After(5 * time.Second):
			w.Close()
			<-done
			t.Fatalf("call %d: ReadMessage still reading an endless message 5 s after its deadline", i)
		}
	}
}

// TestEOFPastDeadline: a reader whose deadline has passed still learns
// that the writer closed (io.EOF), not only ErrTimeout: an owner that
// keeps the deadline in the past and waits elsewhere relies on it.
func TestEOFPastDeadline(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, &Options{Spin: -1})
	r.SetDeadline(time.Unix(1, 0))
	if _, _, err := r.Next(); err != ErrTimeout {
		t.Fatalf("Next on an empty ring past its deadline: %v, want ErrTimeout", err)
	}
	if err := w.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if p, _, err := r.Next(); err != nil || string(p) != "last" {
		t.Fatalf("Next = %q, %v", p, err)
	}
	r.Release()
	if !r.Arm() {
		t.Fatal("Arm false after the writer closed")
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next after the writer closed, past the deadline: %v, want io.EOF", err)
	}
}

// Both sides' mappings are in place once they are made: records going
// round the ring for the first time take no page faults.
func TestMappingPopulated(t *testing.T) {
	checkLeaks(t)
	probe, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Madvise(probe, unix.MADV_POPULATE_WRITE)
	unix.Munmap(probe)
	if err != nil {
		t.Skipf("no MADV_POPULATE_WRITE here (Linux 5.14): %v", err)
	}
	const capacity = 1 << 20
	w, r := newPair(t, capacity, nil)
	msg := bytes.Repeat([]byte{1}, 64<<10)
	buf := bytes.Repeat([]byte{2}, len(msg)) // both in place before the count
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	faults := func() int64 {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
			t.Fatal(err)
		}
		return int64(ru.Minflt) // int32 on 386
	}
	before := faults()
	for range 2 * capacity / len(msg) { // twice round
		if err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadMessage(buf[:0], len(msg)); err != nil {
			t.Fatal(err)
		}
	}
	// Without the mappings in place: a fault per page on each side.
	if n := faults() - before; n > 8 {
		t.Errorf("%d page faults in two passes round a ring of %d pages", n, capacity/os.Getpagesize())
	}
}

// TestRewind: a record of a mebibyte goes back to the start of the data
// area when the reader has given back every record, and nowhere else: not
// while a record is unread, not when the padding would overlap it, not in
// the middle of a message, and never for a small record. Every message
// still arrives whole and in order.
func TestRewind(t *testing.T) {
	checkLeaks(t)
	const capacity = 4 << 20
	const large = 1<<20 + 100
	w, r := newPair(t, capacity, nil)
	var sent uint64
	// put reserves a record of n bytes, checks that its payload starts
	// at offset want of the data area, and fills it with message sent.
	put := func(n int, want uint64, more bool) {
		t.Helper()
		p, err := w.Reserve(n)
		if err != nil {
			t.Fatal(err)
		}
		if got := uint64(uintptr(unsafe.Pointer(&p[0])) - uintptr(unsafe.Pointer(&w.s.data[0]))); got != want {
			t.Fatalf("record %d of %d bytes at offset %d, want %d", sent, n, got, want)
		}
		copy(p, message(nil, sent, n))
		sent++
		if err := w.Commit(n, more); err != nil {
			t.Fatal(err)
		}
	}
	var got uint64
	take := func(count int) {
		t.Helper()
		for range count {
			p, _, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if want := message(nil, got, len(p)); !bytes.Equal(p, want) {
				t.Fatalf("record %d differs", got)
			}
			got++
			r.Release()
		}
	}
	small := recordSize(100)
	big := recordSize(large)
	put(100, recordHeader, false)
	take(1)
	put(large, small+recordHeader, false) // the padding would overlap it
	take(1)
	put(large, recordHeader, false) // rewound
	take(1)
	put(100, big+recordHeader, false)         // small: never
	put(large, big+small+recordHeader, false) // one unread
	take(2)
	put(large, recordHeader, true) // rewound: the first record of a message
	take(1)
	put(large, big+recordHeader, false) // the ring is empty, but the message goes on
	take(1)
	put(large, recordHeader, false) // rewound again
	take(1)
	if got != sent {
		t.Fatalf("read %d records of %d", got, sent)
	}
}

// rewindFrom lets records of n bytes or more rewind for the rest of the
// test, so that small rings can show it.
func rewindFrom(t *testing.T, n int) {
	old := rewindMin
	rewindMin = recordSize(uint64(n))
	t.Cleanup(func() { rewindMin = old })
}

// TestPaddingWakesWriter: a writer waiting for room that a padding record
// holds is woken when the reader steps over the padding, not only when it
// gives back the record after it, which a reader may hold for long (a
// server's handler working on a request).
func TestPaddingWakesWriter(t *testing.T) {
	checkLeaks(t)
	unboundSleeps(t) // without the wake-up, the writer sleeps to its deadline
	const capacity = 64 << 10
	const large = capacity/8 + 100
	rewindFrom(t, large)
	w, r := newPair(t, capacity, &Options{Spin: -1})
	for range 2 { // the second record goes back to the start, after a padding record
		if err := w.Write(make([]byte, large)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadMessage(nil, large); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write(make([]byte, large)); err != nil { // rewound: padding, then this
		t.Fatal(err)
	}
	w.SetDeadline(time.Now().Add(10 * time.Second))
	done := make(chan error, 1)
	go func() { done <- w.Write(make([]byte, large)) }() // no room before the padding goes
	for w.s.wpark.Load() != parkedFutex {
		time.Sleep(time.Millisecond)
	}
	if _, _, err := r.Next(); err != nil { // steps over the padding, holds the record
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		w.Close() // ends the wait, so that the test leaves nothing running
		<-done
		r.Release()
		t.Fatal("the writer still waits for room the padding left")
	}
	r.Release()
	if _, err := r.ReadMessage(nil, large); err != nil {
		t.Fatal(err)
	}
}

// TestSeals: a record is the reader's once its header carries the seal of
// its position, and no other word passes for one: not a header sealed
// for the same offset a lap before (what a full ring leaves after its
// last record), nor one that was there before the writer got there (the
// writer clears the word after its last record before it publishes).
func TestSeals(t *testing.T) {
	checkLeaks(t)
	const c = MinCapacity
	expired := time.Now().Add(-time.Second)

	t.Run("last lap's header", func(t *testing.T) {
		_, s, _ := heapRing(c)
		s.head.Store(c)
		r, err := newReader(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.SetDeadline(expired)
		putRecord(s, 0, 3, 0)
		if _, _, err := r.Next(); !errors.Is(err, ErrTimeout) {
			t.Fatalf("Next over the last lap's header: %v, want ErrTimeout", err)
		}
		putRecord(s, c, 3, 0)
		if p, _, err := r.Next(); err != nil || len(p) != 3 {
			t.Fatalf("Next over this lap's header: %d bytes, %v", len(p), err)
		}
	})

	t.Run("word after the last record", func(t *testing.T) {
		w, r := newPair(t, c, nil)
		r.SetDeadline(expired)
		planted := 0
		for i := range 2 * c / 16 { // two laps of 16-byte records
			pos := w.tail + 16
			// What the reader would take next, where it is free space as
			// the writer knows (else the word there is the header of the
			// record one lap before: "full ring").
			if pos-w.head < c {
				putRecord(w.s, pos, 5, 0)
				planted++
			}
			if err := w.Write([]byte("12345678")); err != nil {
				t.Fatal(err)
			}
			if p, _, err := r.Next(); err != nil || string(p) != "12345678" {
				t.Fatalf("record %d: %q, %v", i, p, err)
			}
			r.Release()
			if _, _, err := r.Next(); !errors.Is(err, ErrTimeout) {
				t.Fatalf("after record %d, a word planted at %d was taken: %v", i, pos, err)
			}
		}
		if planted < c/16 {
			t.Fatalf("planted only %d words", planted)
		}
	})

	t.Run("full ring", func(t *testing.T) {
		w, r := newPair(t, c, nil)
		r.SetDeadline(expired)
		w.SetDeadline(expired)
		msg := make([]byte, c/8-recordHeader)
		for lap := range 3 {
			for i := range 8 {
				if err := w.Write(msg); err != nil {
					t.Fatalf("lap %d, record %d: %v", lap, i, err)
				}
			}
			if err := w.Write(msg); !errors.Is(err, ErrTimeout) {
				t.Fatalf("lap %d: a ninth record in a full ring: %v", lap, err)
			}
			for i := range 8 {
				if _, _, err := r.Next(); err != nil {
					t.Fatalf("lap %d, reading record %d: %v", lap, i, err)
				}
				r.Release()
			}
			if _, _, err := r.Next(); !errors.Is(err, ErrTimeout) {
				t.Fatalf("lap %d: the reader took the first record's header again: %v", lap, err)
			}
		}
	})
}

// TestPrefetchRange: the lines a writer asks for after a record lie in
// the data area, in free space where its next record of the same size
// would go, and leave out the line the record just published ends in.
func TestPrefetchRange(t *testing.T) {
	const c = 4 * MinCapacity
	_, s, _ := heapRing(c)
	w, err := newWriter(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	for _, size := range []uint64{8, prefetchMin, 1000, 4104, c / 2} {
		for tail := uint64(2 * c); tail < 4*c; tail += 8 {
			for _, used := range []uint64{0, 8, c / 2, c - size} {
				w.tail, w.head = tail, tail-used
				start, end, ok := w.prefetchRange(size)
				if !ok {
					continue
				}
				asked++
				off := tail % c
				next, pad := off, uint64(0) // where the next record goes, after padding
				if size > c-off {
					next, pad = 0, c-off
				}
				if start%64 != 0 || end > c || start >= end || start < next || end > next+size {
					t.Fatalf("size %d at offset %d: lines [%d, %d)", size, off, start, end)
				}
				if next == off && start < off {
					t.Fatalf("size %d at offset %d: asks for the line before the tail", size, off)
				}
				if free := c - used - pad; end-next > free {
					t.Fatalf("size %d at offset %d, %d used: asks for %d bytes, %d free", size, off, used, end-next, free)
				}
				w.prefetch(size)
			}
		}
	}
	if asked == 0 {
		t.Fatal("no range asked for")
	}
	if _, _, ok := w.prefetchRange(prefetchMin - 8); ok {
		t.Fatal("a range asked for a small record")
	}
}

// TestStagedLostAtClose: records staged and never flushed stay hidden
// behind the first one's header, which the writer never stored: after
// the writer closes, the reader gets the records published before them
// and then io.EOF, also when the staged records came as a batch
// (StageRecords, whose later headers it did write, sealed).
func TestStagedLostAtClose(t *testing.T) {
	for _, batched := range []bool{false, true} {
		w, r := newPair(t, MinCapacity, nil)
		if err := w.Write([]byte("published")); err != nil {
			t.Fatal(err)
		}
		if batched {
			var batch []byte
			for _, m := range []string{"one", "two", "three"} {
				batch = AppendRecord(batch, []byte(m), false, false)
			}
			if n, err := w.StageRecords(batch); err != nil || n != len(batch) {
				t.Fatalf("StageRecords: %d of %d, %v", n, len(batch), err)
			}
		} else {
			for _, m := range []string{"one", "two", "three"} {
				b, err := w.Reserve(len(m))
				if err != nil {
					t.Fatal(err)
				}
				copy(b, m)
				if err := w.Stage(len(m), false); err != nil {
					t.Fatal(err)
				}
			}
		}
		w.Close()
		r.SetDeadline(time.Now().Add(10 * time.Second))
		if p, _, err := r.Next(); err != nil || string(p) != "published" {
			t.Fatalf("batched %v: first record %q, %v", batched, p, err)
		}
		r.Release()
		if p, _, err := r.Next(); err != io.EOF {
			t.Fatalf("batched %v: after the writer closed with records staged: %q, %v; want io.EOF", batched, p, err)
		}
	}
}

// TestCommitCloseRace: a Close from another goroutine while the owner
// commits records one after another never ends the reader's stream before
// a record whose Commit returned nil: a Commit that Close overtook while it
// published returns ErrClosed.
func TestCommitCloseRace(t *testing.T) {
	checkLeaks(t)
	for round := range 200 {
		w, r := newPair(t, MinCapacity, nil)
		committed := make(chan int, 1)
		go func() {
			n := 0
			for {
				b, err := w.Reserve(8)
				if err != nil {
					break
				}
				binary.LittleEndian.PutUint64(b, uint64(n))
				if w.Commit(8, false) != nil {
					break
				}
				n++
			}
			committed <- n
		}()
		read := make(chan int, 1)
		go func() {
			n := 0
			for {
				p, _, err := r.Next()
				if err != nil {
					if err != io.EOF {
						t.Errorf("round %d: Next: %v", round, err)
					}
					break
				}
				if got := binary.LittleEndian.Uint64(p); got != uint64(n) {
					t.Errorf("round %d: record %d holds %d", round, n, got)
				}
				r.Release()
				n++
			}
			read <- n
		}()
		time.Sleep(time.Duration(round%40) * 5 * time.Microsecond)
		w.Close()
		// The reader reads every record whose Commit returned nil, and
		// perhaps the one whose Commit Close overtook.
		if n, got := <-committed, <-read; got != n && got != n+1 {
			t.Fatalf("round %d: %d Commits returned nil, the reader read %d records before io.EOF", round, n, got)
		}
		r.Close()
	}
}

// TestReadyPastPadding: padding published ahead of the record it makes
// room for (a Flush while that record is reserved) is no record to Ready:
// Next would step over it and wait. Once the record comes, Ready says so
// and Next returns it.
func TestReadyPastPadding(t *testing.T) {
	checkLeaks(t)
	w, r := newPair(t, MinCapacity, &Options{Spin: -1})
	const small = MinCapacity / 4
	for range 3 { // the tail ends past three quarters of the area
		if err := w.Write(make([]byte, small)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadMessage(nil, small); err != nil {
			t.Fatal(err)
		}
	}
	b, err := w.Reserve(small + 100) // does not fit before the end: padding first
	if err != nil {
		t.Fatal(err)
	}
	w.Flush() // publishes the padding alone
	if r.Ready() {
		t.Fatal("Ready with only padding published")
	}
	copy(b, "after the padding")
	if err := w.Commit(small+100, false); err != nil {
		t.Fatal(err)
	}
	if !r.Ready() {
		t.Fatal("not Ready with a record after the padding")
	}
	r.SetDeadline(time.Now().Add(-time.Second)) // Next must not wait
	p, _, err := r.Next()
	if err != nil || !bytes.HasPrefix(p, []byte("after the padding")) {
		t.Fatalf("Next: %q, %v", p[:min(len(p), 17)], err)
	}
	r.Release()
}
