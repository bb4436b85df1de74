package bench

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// newShmipcPeer returns the registered shmipc peer, ready to run, or skips
// the test where it is unavailable.
func newShmipcPeer(t *testing.T, env *Env) shmipcPeer {
	t.Helper()
	info, ok := Lookup("shmipc")
	if !ok {
		t.Fatal("no peer shmipc")
	}
	p := info.New().(shmipcPeer)
	if err := p.Prepare(context.Background(), env); errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	return p
}

// runShmipc runs one case of p, a shmipc peer, as the Runner would.
func runShmipc(t *testing.T, env *Env, p Peer, c Case) (Record, error) {
	t.Helper()
	r, err := NewRunner(WithCounters(false))
	if err != nil {
		t.Fatal(err)
	}
	run := Run{Case: c, Peer: "shmipc", Duration: 300 * time.Millisecond, Warmup: 20 * time.Millisecond}
	return r.runOne(context.Background(), env, p, run)
}

// The shmipc peer's client checks that every reply is its request's size
// and carries back the sequence number stamped into the request (a
// mismatch fails the run), and every message goes through shared memory.
func TestShmipcPingPong(t *testing.T) {
	leakcheck.Check(t)
	env := testEnv(t)
	p := newShmipcPeer(t, env)
	for _, size := range []int{64, 1 << 20} {
		rec, err := runShmipc(t, env, p, Case{PingPong, size, 1})
		if err != nil {
			t.Fatalf("pingpong %s: %v", FormatSize(size), err)
		}
		checkRecord(t, &rec) // samples = ops, errors, percentiles, payload both ways
		if n := rec.Histogram().TotalCount(); n != rec.Ops || n < 10 {
			t.Errorf("pingpong %s: %d samples for %d ops", FormatSize(size), n, rec.Ops)
		}
		if rec.Latency.Min <= 0 {
			t.Errorf("pingpong %s: min latency %dns", FormatSize(size), rec.Latency.Min)
		}
		for _, n := range rec.Notes {
			if strings.Contains(n, "shmipc") {
				t.Errorf("pingpong %s: %s", FormatSize(size), n)
			}
		}
	}
}

// The client's check is live: a server that damages the first byte of
// each reply fails the run at the first reply.
func TestShmipcDetectsCorruptReplies(t *testing.T) {
	leakcheck.Check(t)
	env := testEnv(t)
	p := newShmipcPeer(t, env)
	p.corrupt = true
	_, err := runShmipc(t, env, p, Case{PingPong, 64, 1})
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "reply 1 (64 bytes) carries stamp 254") {
		t.Fatalf("run against a corrupting server: %v", err)
	}
}

func TestShmipcStamps(t *testing.T) {
	for size := 1; size <= 9; size++ {
		msg := patternPayload(size)
		const seq = 0x0807060504030201
		stamp(msg, seq)
		if err := checkReply(msg, size, seq); err != nil {
			t.Errorf("%d bytes: %v", size, err)
		}
		if checkReply(msg, size, seq+1) == nil || checkReply(msg[:size-1], size, seq) == nil {
			t.Errorf("%d bytes: a reply to another request passed", size)
		}
		msg[0] ^= 1
		if checkReply(msg, size, seq) == nil {
			t.Errorf("%d bytes: a damaged stamp passed", size)
		}
	}
}
