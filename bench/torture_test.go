package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestTortureRuns runs the short torture scenarios end to end: server and
// attackers in child processes, rows beside their targets.
func TestTortureRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	var progress strings.Builder
	reports, err := Torture(context.Background(), TortureOptions{
		Scenarios: []string{"pipelined", "chaos"},
		Phase:     time.Second,
		Progress:  &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 {
		t.Fatalf("%d reports", len(reports))
	}
	for _, r := range reports {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Scenario, r.Err)
		}
		checked := 0
		for _, row := range r.Rows {
			if row.Target != "" {
				checked++
			}
		}
		if checked == 0 {
			t.Fatalf("%s checks nothing: %+v", r.Scenario, r.Rows)
		}
		// The chaos scenario's verdict must hold whatever the machine's
		// speed; the pipelined ratio is a measurement, reported only.
		if r.Scenario == "chaos" && !r.Pass() {
			t.Fatalf("chaos: %+v", r.Rows)
		}
	}
	if _, err := Torture(context.Background(), TortureOptions{Scenarios: []string{"nope"}}); err == nil {
		t.Fatal("an unknown scenario was accepted")
	}
}

// TestVerifiedReplies: the chaos scenario's check tells a reply for
// another request, or a corrupted one, from the right one.
func TestVerifiedReplies(t *testing.T) {
	if !verifyReply(verifiedReply(7, 100), 7, 100) || !verifyReply(verifiedReply(9, 0), 9, 0) {
		t.Fatal("the right reply was rejected")
	}
	for _, bad := range [][]byte{verifiedReply(8, 100), verifiedReply(7, 99), verifiedReply(7, 101), nil} {
		if verifyReply(bad, 7, 100) {
			t.Fatalf("a reply for another request passed (%d bytes)", len(bad))
		}
	}
	r := verifiedReply(7, 100)
	r[60] ^= 1
	if verifyReply(r, 7, 100) {
		t.Fatal("a corrupted reply passed")
	}
	req := appendVerified(nil, 7, 100)
	if len(req) != len(chkPrefix)+12 {
		t.Fatalf("request of %d bytes", len(req))
	}
}

// TestLegitStallShows: a legitimate client's call that the server stalls
// past the end of the phase is measured to its end, not dropped: a server
// that starves its clients must show in the storm's rows.
func TestLegitStallShows(t *testing.T) {
	leakcheck.Check(t)
	const stall = 500 * time.Millisecond
	handler := engine.HandlerFunc(func(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
		time.Sleep(stall) // every ping: each client's first outlives the phase
		_, err := w.Write([]byte("pong"))
		return err
	})
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "s")
	s, err := engine.NewServer(socket, handler)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	defer func() {
		cancel()
		<-served
	}()
	oneShot, persistent := measureLegit(context.Background(), socket, 200*time.Millisecond)
	for _, l := range []*legit{oneShot, persistent} {
		if l.errs.Load() != 0 {
			t.Fatalf("oneShot %v: %d errors, first %v", l.oneShot, l.errs.Load(), l.first)
		}
		if got := time.Duration(l.hist.Max()); got < stall {
			t.Errorf("oneShot %v: the longest call took %v of a %v stall (%d calls measured)", l.oneShot, got, stall, l.hist.TotalCount())
		}
	}
}
