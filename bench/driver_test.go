package bench

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// slowFirst is a RoundTripper whose first round trip takes first and the
// others no time.
type slowFirst struct {
	first time.Duration
	calls *atomic.Int64
}

func (s slowFirst) RoundTrip(_ context.Context, req []byte) (int, error) {
	if s.calls.Add(1) == 1 {
		time.Sleep(s.first)
	}
	return len(req), nil
}

func (slowFirst) Close() error { return nil }

// TestWindowWaitsForAMeasure: an operation begun in the warm-up that
// outlasts the whole window leaves the window open until an operation
// begun in it ends, so that the run measures something, over the time it
// took, instead of failing with ErrNoOps.
func TestWindowWaitsForAMeasure(t *testing.T) {
	var calls atomic.Int64
	g := GoClient{Dial: func(context.Context, string) (RoundTripper, error) {
		return slowFirst{first: 300 * time.Millisecond, calls: &calls}, nil
	}}
	run := Run{Case: Case{PingPong, 64, 1}, Peer: "fake", Duration: 50 * time.Millisecond, Warmup: 10 * time.Millisecond}
	m := newMeter(0, false)
	load, err := g.Run(context.Background(), run, m)
	if err != nil {
		t.Fatal(err)
	}
	if load.Hist == nil || load.Hist.TotalCount() == 0 {
		t.Fatal("no operation measured")
	}
	if got := m.Elapsed(); got < 250*time.Millisecond {
		t.Fatalf("window of %v: it closed before an operation begun in it ended", got)
	}
	rec, err := buildRecord(run, load, m)
	if err != nil || rec.Ops == 0 {
		t.Fatalf("record: %d ops, %v", rec.Ops, err)
	}
}

// TestNoOpsSaysWhy: a run in which every operation failed fails with
// ErrNoOps and the clients' first error, not with ErrNoOps alone.
func TestNoOpsSaysWhy(t *testing.T) {
	g := GoClient{Dial: func(context.Context, string) (RoundTripper, error) {
		return failing{}, nil
	}}
	run := Run{Case: Case{PingPong, 64, 1}, Peer: "fake", Duration: 30 * time.Millisecond, Warmup: 10 * time.Millisecond}
	m := newMeter(0, false)
	load, err := g.Run(context.Background(), run, m)
	if err != nil {
		t.Fatal(err)
	}
	_, err = buildRecord(run, load, m)
	if !errors.Is(err, ErrNoOps) || !strings.Contains(err.Error(), errRefused.Error()) {
		t.Fatalf("buildRecord = %v, want ErrNoOps with the first error", err)
	}
}

var errRefused = errors.New("refused by the fake server")

// failing is a RoundTripper whose every call fails.
type failing struct{}

func (failing) RoundTrip(context.Context, []byte) (int, error) { return 0, errRefused }
func (failing) Close() error                                   { return nil }
