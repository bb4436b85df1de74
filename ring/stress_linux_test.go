//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

var (
	stressMessages = flag.Int("ring.stress", 100_000, "messages in TestNoLostWakeUp and TestNoLostWakeUpBatched (the long run: 10000000, with -timeout 60m)")
	setupRounds    = flag.Int("ring.setups", 2_000, "rings made and torn down in TestSetupTeardown (the long run: 100000)")
)

// TestNoLostWakeUp streams numbered messages between two goroutines that
// each pause at random (not at all, a yield, a spin, a sleep), with short
// spins, so that both sides park and are woken again and again, also
// while the other side is just publishing or releasing. A lost wake-up
// leaves a side parked with work waiting: a deadline that each side moves
// on as it progresses then fails the test instead of hanging. Doorbells
// are covered too: in the second round the reader waits on a doorbell
// (Arm) instead of the futex. In the last it takes each record with
// SpinNext where its spin finds one (with Options.Prefetch), and waits in
// Next only where it does not.
func TestNoLostWakeUp(t *testing.T) {
	checkLeaks(t)
	unboundSleeps(t)
	rewindFrom(t, 512)
	n := *stressMessages
	if testing.Short() {
		n = min(n, 20_000)
	}
	for round, mode := range []string{"futex", "bell", "futex", "spinnext"} {
		var bell *Doorbell
		opts := &Options{Spin: time.Microsecond, Prefetch: mode == "spinnext"}
		if mode == "bell" {
			b, ring, err := NewDoorbell()
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			bell, opts.Doorbell = b, ring
		}
		w, r := newPair(t, MinCapacity, opts)
		if opts.Doorbell != nil {
			opts.Doorbell.Close()
		}
		// Each side moves its deadline on as it makes progress: a lost
		// wake-up stalls a side for good, a slow machine only slows it.
		const stall = 30 * time.Second
		w.SetDeadline(time.Now().Add(stall))
		r.SetDeadline(time.Now().Add(stall))
		pause := stressPause
		done := make(chan error, 1)
		go func() {
			rng := rand.New(rand.NewPCG(uint64(round), 1))
			// Mostly small messages; one in eight large enough that its
			// first record goes back to the start of an empty ring
			// (Writer.rewind; rewindFrom above).
			var msg [1800]byte
			for i := range n {
				if i%1024 == 0 {
					w.SetDeadline(time.Now().Add(stall))
				}
				pause(rng)
				size := 8 + rng.IntN(17)
				if rng.IntN(8) == 0 {
					size = 8 + rng.IntN(len(msg)-7)
				}
				binary.LittleEndian.PutUint64(msg[:], uint64(i))
				if err := w.Write(msg[:size]); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		rng := rand.New(rand.NewPCG(uint64(round), 2))
		buf := make([]byte, 0, 2048)
		for i := range n {
			if i%1024 == 0 {
				r.SetDeadline(time.Now().Add(stall))
			}
			pause(rng)
			if bell != nil {
				for !r.Arm() {
					if ok, err := bell.Wait(stall); err != nil || !ok {
						t.Fatalf("round %d: doorbell wait for message %d of %d: %v (a lost wake-up)", round, i, n, err)
					}
					if err := bell.Drain(); err != nil {
						t.Fatal(err)
					}
				}
			}
			var got []byte
			var err error
			if mode == "spinnext" {
				got, err = spinNextMessage(r)
			} else {
				got, err = r.ReadMessage(buf[:0], cap(buf))
			}
			if err != nil {
				t.Fatalf("round %d: message %d of %d: %v (a lost wake-up)", round, i, n, err)
			}
			if len(got) < 8 || binary.LittleEndian.Uint64(got) != uint64(i) {
				t.Fatalf("round %d: message %d: got %x", round, i, got)
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("round %d: writer: %v", round, err)
		}
	}
}

// spinNextMessage reads one message as the engine's ring waits do: each
// record with SpinNext, or with Next when the spin found nothing. The
// records are released as they are copied out.
func spinNextMessage(r *Reader) ([]byte, error) {
	var msg []byte
	for {
		p, more, ok := r.SpinNext()
		if !ok {
			var err error
			if p, more, err = r.Next(); err != nil {
				return nil, err
			}
		}
		msg = append(msg, p...)
		r.Release()
		if !more {
			return msg, nil
		}
	}
}

// stressPause pauses a side of a stress test now and then, at random: a
// sleep, a spin, or a yield, so that each side catches the other in every
// state.
func stressPause(rng *rand.Rand) {
	switch rng.IntN(64) {
	case 0:
		time.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
	case 1, 2:
		for range rng.IntN(2000) {
			spinPause()
		}
	case 3:
		runtime.Gosched()
	}
}

// unboundSleeps lets a futex sleep last to the side's deadline for the
// rest of the test, so that a lost wake-up stalls the side until the test
// fails instead of costing it a second (maxSleep) and going unseen.
func unboundSleeps(t *testing.T) {
	old := maxSleep
	maxSleep = time.Hour
	t.Cleanup(func() { maxSleep = old })
}

// TestSetupTeardown makes rings, maps both sides, passes a message and
// tears them down, many times: no mapping, descriptor or goroutine stays.
func TestSetupTeardown(t *testing.T) {
	checkLeaks(t)
	n := *setupRounds
	if testing.Short() {
		n = min(n, 200)
	}
	for i := range n {
		f, err := Create(MinCapacity)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := w.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if got, err := r.ReadMessage(nil, 8); err != nil || string(got) != "x" {
			t.Fatalf("round %d: %q, %v", i, got, err)
		}
		w.Close()
		r.Close()
	}
}
