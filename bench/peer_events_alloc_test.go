//go:build !race

package bench

import (
	"context"
	"strconv"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// The pktipc-events peer's measuring loop must not allocate: its round
// trip and its stream sends are zero-allocation in steady state. The server
// runs in this process, so its WaitEvent and Write are counted too.
func TestEventsClientDoesNotAllocate(t *testing.T) {
	leakcheck.Check(t)
	ctx := context.Background()
	rt, err := dialEvents(ctx, startEvents(t, PingPong))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	req := patternPayload(4096)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := rt.RoundTrip(ctx, req); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("pktipc-events RoundTrip allocates %v times", n)
	}

	st, err := openEventsStream(ctx, startEvents(t, Stream), 512)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msg := patternPayload(512)
	if n := testing.AllocsPerRun(200, func() {
		if err := st.Send(msg); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("pktipc-events stream Send allocates %v times", n)
	}
	if err := st.Finish(ctx); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkEventsRoundTrip(b *testing.B) {
	for _, size := range []int{64, 4096, 70000} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			rt, err := dialEvents(context.Background(), startEvents(b, PingPong))
			if err != nil {
				b.Fatal(err)
			}
			defer rt.Close()
			req := patternPayload(size)
			ctx := context.Background()
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rt.RoundTrip(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
