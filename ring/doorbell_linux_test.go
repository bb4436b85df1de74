//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"errors"
	"io"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestOneWaiterManyRings: eight writers, each on its own ring, and one
// goroutine reading all eight rings, sleeping only on one doorbell that
// every writer rings. Every message arrives, in order per ring.
func TestOneWaiterManyRings(t *testing.T) {
	checkLeaks(t)
	wait, bell, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	defer wait.Close()
	const rings, msgs = 8, 2000
	readers := make([]*Reader, rings)
	var wg sync.WaitGroup
	for i := range rings {
		w, r := newPair(t, MinCapacity, &Options{Doorbell: bell, Spin: -1})
		readers[i] = r
		wg.Go(func() {
			for j := range msgs {
				if err := w.Write([]byte(strconv.Itoa(j))); err != nil {
					t.Errorf("ring %d: %v", i, err)
					return
				}
			}
			w.Close()
		})
	}
	bell.Close() // the sides hold duplicates

	next := make([]int, rings)
	open, sleeps := rings, 0
	var buf []byte
	for open > 0 {
		idle := true
		for i, r := range readers {
			if next[i] < 0 || !r.Arm() {
				continue
			}
			idle = false
			buf, err = r.ReadMessage(buf[:0], 100)
			if err == io.EOF {
				if next[i] != msgs {
					t.Fatalf("ring %d ended after %d messages", i, next[i])
				}
				next[i], open = -1, open-1
				continue
			}
			if err != nil || string(buf) != strconv.Itoa(next[i]) {
				t.Fatalf("ring %d message %d: %q, %v", i, next[i], buf, err)
			}
			next[i]++
		}
		if idle {
			// Every ring is armed: a commit or close on any of them rings.
			if ok, err := wait.Wait(10 * time.Second); !ok || err != nil {
				t.Fatalf("no ring for 10 s with %d rings open (%v)", open, err)
			}
			if err := wait.Drain(); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			sleeps++
		}
	}
	wg.Wait()
	t.Logf("%d messages on %d rings, the reader slept %d times", rings*msgs, rings, sleeps)
	// With both sides of every ring closed, no copy of the ringing end is
	// left: the doorbell reads end of file.
	for _, r := range readers {
		r.Close()
	}
	if err := wait.Drain(); err != io.EOF {
		t.Fatalf("doorbell after every writer closed: %v, want io.EOF", err)
	}
}

// TestWriterArm: a writer facing a full ring arms its doorbell and is rung
// when the reader releases a record.
func TestWriterArm(t *testing.T) {
	checkLeaks(t)
	wait, bell, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	defer wait.Close()
	w, r := newPair(t, MinCapacity, &Options{Doorbell: bell})
	bell.Close()
	n := 1000
	for w.Arm(n) {
		b, err := w.Reserve(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Commit(len(b), false)
	}
	if ok, _ := wait.Wait(0); ok {
		t.Fatal("doorbell rung before the reader released anything")
	}
	done := make(chan error)
	go func() {
		_, _, err := r.Next()
		r.Release()
		done <- err
	}()
	if ok, _ := wait.Wait(10 * time.Second); !ok {
		t.Fatal("the reader's Release did not ring the writer's doorbell")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wait.Drain()
	if !w.Arm(n) {
		t.Fatal("Arm false after the reader made room")
	}
	if w.Arm(w.MaxRecord()+1) != true {
		t.Fatal("Arm of an impossible size must report that Reserve returns at once")
	}
	if _, err := w.Reserve(w.MaxRecord() + 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Reserve: %v", err)
	}
}

// TestSpin: Spin reports readiness without parking and without arming:
// false on an empty (or full) ring after its spin, true once the peer has
// published (or released), and the peer never rings for a Spin.
func TestSpin(t *testing.T) {
	checkLeaks(t)
	wait, bell, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	defer wait.Close()
	w, r := newPair(t, MinCapacity, &Options{Spin: 50 * time.Microsecond, Doorbell: bell})
	bell.Close()
	if r.Spin() {
		t.Fatal("Spin true on an empty ring")
	}
	if err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := wait.Wait(0); ok {
		t.Fatal("a Spin armed the ring: the writer rang")
	}
	if !r.Spin() {
		t.Fatal("Spin false with a record published")
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.Release()
	n := 1000
	fillRing(t, w, n)
	done := make(chan bool)
	go func() { done <- w.Spin(n) }()
	// A release during the writer's spin, or before it, makes room.
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.Release()
	if !<-done && !w.Spin(n) {
		t.Fatal("Spin false after the reader made room")
	}
	if ok, _ := wait.Wait(0); ok {
		t.Fatal("a Spin armed the writer: the reader rang")
	}
	r.Close()
	if !w.Spin(n) {
		t.Fatal("Spin must report true once the reader closed: Reserve returns at once")
	}
}

// TestSleep: Sleep reports readiness after sleeping on the futex: false
// once its time is up on an empty (or full) ring, true when the peer's
// publish (or release) or a Close wakes it long before that, and the
// peer never rings the doorbell for a sleeper.
func TestSleep(t *testing.T) {
	checkLeaks(t)
	wait, bell, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	defer wait.Close()
	w, r := newPair(t, MinCapacity, &Options{Spin: -1, Doorbell: bell})
	bell.Close()
	start := time.Now()
	if r.Sleep(2 * time.Millisecond) {
		t.Fatal("Sleep true on an empty ring")
	}
	if d := time.Since(start); d < 2*time.Millisecond {
		t.Fatalf("Sleep gave up after %v, before its 2ms", d)
	}
	if r.s.rpark.Load() != 0 {
		t.Fatal("Sleep left the parking word raised")
	}
	// A wake-up that is lost shows as a sleep to the end: 10 s, where a
	// publish 5 ms in ends it.
	const long = 10 * time.Second
	wrote := make(chan error)
	go func() {
		time.Sleep(5 * time.Millisecond)
		wrote <- w.Write([]byte("x"))
	}()
	start = time.Now()
	if !r.Sleep(long) {
		t.Fatal("Sleep false after a publish")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= long/2 {
		t.Fatalf("the publish did not wake the sleeper: %v", d)
	}
	if ok, _ := wait.Wait(0); ok {
		t.Fatal("the writer rang the doorbell for a sleeper")
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.Release()

	n := 1000
	fillRing(t, w, n)
	if w.Sleep(n, time.Millisecond) {
		t.Fatal("Writer.Sleep true on a full ring")
	}
	read := make(chan error)
	go func() {
		time.Sleep(5 * time.Millisecond)
		_, _, err := r.Next()
		r.Release()
		read <- err
	}()
	start = time.Now()
	if !w.Sleep(n, long) {
		t.Fatal("Writer.Sleep false after a release")
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= long/2 {
		t.Fatalf("the release did not wake the writer: %v", d)
	}
	if ok, _ := wait.Wait(0); ok {
		t.Fatal("the reader rang the doorbell for a sleeper")
	}

	// Close wakes the side's own sleeping owner.
	fillRing(t, w, n)
	closed := make(chan error)
	go func() {
		time.Sleep(5 * time.Millisecond)
		closed <- w.Close()
	}()
	start = time.Now()
	if !w.Sleep(n, long) {
		t.Fatal("Writer.Sleep false after Close: Reserve returns at once")
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= long/2 {
		t.Fatalf("Close did not wake the writer: %v", d)
	}
	if _, err := w.Reserve(n); err != ErrClosed {
		t.Fatalf("Reserve after Close: %v", err)
	}
}

// fillRing writes records of n bytes until the ring has no room for one
// more.
func fillRing(t *testing.T, w *Writer, n int) {
	t.Helper()
	for w.Spin(n) {
		if err := w.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPollMillis: a wait's milliseconds for poll round up and stay within
// poll's 32-bit range, also where int has 32 bits (a wait of 25 days
// wrapped to a negative value there: forever).
func TestPollMillis(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 0},
		{0, 0},
		{1, 1},
		{time.Millisecond, 1},
		{time.Millisecond + 1, 2},
		{25 * 24 * time.Hour, math.MaxInt32},
		{time.Duration(math.MaxInt64), math.MaxInt32},
	} {
		if got := pollMillis(c.d); got != c.want {
			t.Errorf("pollMillis(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}
