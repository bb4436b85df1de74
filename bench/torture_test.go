package bench

import (
	"context"
	"strings"
	"testing"
	"time"
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
