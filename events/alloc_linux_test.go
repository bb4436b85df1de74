//go:build linux && !race

package events

import (
	"context"
	"testing"

	"golang.org/x/sys/unix"
)

// A round trip through the Loop (a message in, a Write out) and a
// Schedule with its MessageTx allocate nothing in steady state, in every
// format.
func TestNoAllocsPerEvent(t *testing.T) {
	checked(t)
	ctx := context.Background()
	for _, f := range formats {
		l := newTestLoop(t)
		id, peer := pair(t, l, f)
		in := enc(t, f, 3, make([]byte, 64))
		out := make([]byte, 64)
		buf := make([]byte, 4096)
		rtt := func() {
			unix.Write(peer, in)
			ev, err := l.WaitEvent(ctx)
			if err != nil || ev.Kind != MessageRx || len(ev.Data) != 64 {
				t.Fatalf("%v %v", ev.Kind, err)
			}
			if err := l.WriteTyped(id, ev.UserType, out); err != nil {
				t.Fatal(err)
			}
			unix.Read(peer, buf)
		}
		if n := testing.AllocsPerRun(1000, rtt); n != 0 {
			t.Errorf("%s: round trip: %v allocations", f, n)
		}
		sched := func() {
			if err := l.Schedule(id, out); err != nil {
				t.Fatal(err)
			}
			ev, err := l.WaitEvent(ctx)
			if err != nil || ev.Kind != MessageTx {
				t.Fatalf("%v %v", ev.Kind, err)
			}
			unix.Read(peer, buf)
		}
		if n := testing.AllocsPerRun(1000, sched); n != 0 {
			t.Errorf("%s: schedule: %v allocations", f, n)
		}
	}
}
