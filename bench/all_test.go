package bench

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// tinyPlan is every scenario against every registered peer in a
// configuration small enough for -race on two cores: short windows (long
// enough that a run still completes operations while other test binaries
// load the machine), a multi-packet message instead of 1 MiB, 16 clients
// instead of 1024.
func tinyPlan(t *testing.T, testTool string) *Plan {
	t.Helper()
	cases := []Case{
		{PingPong, 64, 1}, {PingPong, 70000, 1},
		{Connect, 64, 1}, {Connect, 64, 3},
		{Concurrency, 64, 1}, {Concurrency, 64, 16},
		{Stream, 4096, 1}, {Stream, 512, 2},
		{FDPass, 1, 1}, {FDPass, 8, 2},
	}
	p := &Plan{Suite: "tiny", Duration: 120 * time.Millisecond, Warmup: 15 * time.Millisecond, TestTool: testTool, Cases: cases}
	for _, info := range Peers() {
		p.Peers = append(p.Peers, info.Name)
		for _, c := range cases {
			if info.supports(c) {
				p.Runs = append(p.Runs, Run{Case: c, Peer: info.Name, Duration: p.Duration, Warmup: p.Warmup})
			}
		}
	}
	return p
}

// checkRecord asserts that a record is complete and plausible.
func checkRecord(t *testing.T, r *Record) {
	t.Helper()
	name := r.Peer + " " + r.Case.String()
	if r.Ops <= 0 {
		t.Errorf("%s: %d ops", name, r.Ops)
		return
	}
	if h := r.Histogram(); h == nil || h.TotalCount() != r.Ops {
		t.Errorf("%s: histogram count differs from ops %d", name, r.Ops)
	}
	if r.Errors != 0 {
		t.Errorf("%s: %d errors; notes %q", name, r.Errors, r.Notes)
	}
	l := r.Latency
	if !(0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("%s: percentiles out of order: %+v", name, l)
	}
	if r.DurationNS <= 0 {
		t.Errorf("%s: duration %d", name, r.DurationNS)
	}
	secs := r.Duration().Seconds()
	if want := float64(r.Ops) / secs; math.Abs(r.OpsPerSec-want) > 1e-6*want {
		t.Errorf("%s: %.1f ops/s, but %d ops in %v", name, r.OpsPerSec, r.Ops, r.Duration())
	}
	// Echo peers move the payload both ways; streams one way; engine.Send
	// against git's daemon a sendbytes request and its 15-byte receipt.
	if r.Peer != "git" && r.Peer != "git-vs-pktipc" {
		perOp := 2 * float64(r.Size)
		switch {
		case r.Peer == "pktipc-vs-git":
			perOp = float64(len(gitBallastRequest(r.Size)) + gitReplySize)
		case r.Scenario == Stream:
			perOp = float64(r.Size)
		case r.Scenario == FDPass:
			perOp = 0 // descriptors, no payload
		}
		if got := r.BytesPerSec * secs; math.Abs(got-perOp*float64(r.Ops)) > 1e-6*max(got, 1) {
			t.Errorf("%s: %.0f payload bytes for %d ops of %v bytes", name, got, r.Ops, perOp)
		}
	} else if r.BytesPerSec <= 0 {
		t.Errorf("%s: %.0f bytes/s", name, r.BytesPerSec)
	}
	if r.ClientCPUPerOp < 0 || r.ServerCPUPerOp < 0 {
		t.Errorf("%s: cpu per op client %v server %v", name, r.ClientCPUPerOp, r.ServerCPUPerOp)
	}
	if n := len(r.CDF); n == 0 || r.CDF[n-1].Quantile != 1 {
		t.Errorf("%s: CDF %v does not reach 1", name, r.CDF)
	}
	for _, c := range []CounterRates{r.ClientCounters, r.ServerCounters} {
		for _, v := range []*float64{c.Cycles, c.Instructions, c.ContextSwitches} {
			if v != nil && *v < 0 {
				t.Errorf("%s: negative counter rate %v", name, *v)
			}
		}
	}
}

func TestEveryScenarioEveryPeer(t *testing.T) {
	leakcheck.Check(t)
	plan := tinyPlan(t, writeFakeTestTool(t))
	tmp := t.TempDir()
	var started, finished int
	r, err := NewRunner(WithTempDir(tmp), WithProgress(func(p Progress) {
		if p.Done {
			finished++
		} else {
			started++
		}
		if p.Index < 1 || p.Index > p.Total || p.Total != len(plan.Runs) {
			t.Errorf("progress %d/%d for a plan of %d runs", p.Index, p.Total, len(plan.Runs))
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if started != len(plan.Runs) || finished != len(plan.Runs) {
		t.Errorf("progress: %d started, %d finished, %d runs", started, finished, len(plan.Runs))
	}
	for _, f := range res.Failures {
		t.Errorf("run failed: %s %s: %s", f.Peer, f.Case, f.Error)
	}
	unavailable := map[string]bool{}
	for _, p := range res.Peers {
		if p.Unavailable != "" {
			t.Logf("peer %s unavailable: %s", p.Name, p.Unavailable)
			unavailable[p.Name] = true
		}
	}
	needNothing := []string{BaselineUnix, "git", "grpc", "ttrpc", "pktipc", "pktipc-events", "pktipc-pool", "pktipc-git", "pktipc-vs-git", "git-vs-pktipc"}
	if slices.ContainsFunc(needNothing, func(p string) bool { return unavailable[p] }) {
		t.Errorf("a peer that needs nothing from the machine was unavailable: %v", unavailable)
	}
	// Every run of an available peer produced a record.
	for _, run := range plan.Runs {
		if unavailable[run.Peer] {
			continue
		}
		rec := res.Find(run.Case, run.Peer)
		if rec == nil {
			t.Errorf("no record for %s %s", run.Peer, run.Case)
			continue
		}
		checkRecord(t, rec)
		if base := res.Find(run.Case, BaselineUnix); base != nil && rec.XUnix == nil {
			t.Errorf("%s %s: no ratio to unix", run.Peer, run.Case)
		}
	}
	for i := range res.Records {
		if r := &res.Records[i]; r.Peer == BaselineUnix && (r.XUnix == nil || *r.XUnix != 1) {
			t.Errorf("unix against itself: %v", FormatRatio(r.XUnix))
		}
	}
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
		t.Errorf("temp dir left with %d entries (%v)", len(ents), err)
	}
	if n := childCount(t); n != 0 {
		t.Errorf("%d child processes left", n)
	}
}

func TestCancelStopsEverything(t *testing.T) {
	leakcheck.Check(t)
	tmp := t.TempDir()
	plan, err := Selection{Peers: []string{BaselineUnix, BaselineC}, Scenarios: []Kind{PingPong}, Sizes: []int{64},
		Duration: time.Minute, Warmup: 10 * time.Millisecond}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := NewRunner(WithTempDir(tmp), WithProgress(func(p Progress) {
		if !p.Done {
			// Cancel once the run's server is up and its client busy.
			go func() {
				time.Sleep(300 * time.Millisecond)
				cancel()
			}()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = r.Run(ctx, plan)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Run took %v to stop after cancel in a one-minute window", d)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("temp dir left with %d entries", len(ents))
	}
	if n := childCount(t); n != 0 {
		t.Errorf("%d child processes left", n)
	}
}

// TestCancelKeepsRatios: a run stopped part-way still has the ratio
// columns of the cases that finished.
func TestCancelKeepsRatios(t *testing.T) {
	leakcheck.Check(t)
	plan, err := Selection{Peers: []string{BaselineUnix, BaselineC}, Scenarios: []Kind{PingPong}, Sizes: []int{64, 4096},
		Duration: 100 * time.Millisecond, Warmup: 10 * time.Millisecond}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := NewRunner(WithTempDir(t.TempDir()), WithProgress(func(p Progress) {
		if !p.Done && p.Run.Size == 4096 {
			cancel() // the 64 B case is done
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(ctx, plan)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	n := 0
	for _, rec := range res.Records {
		if rec.Size != 64 {
			continue
		}
		n++
		if rec.XUnix == nil || rec.XC == nil {
			t.Errorf("%s at 64 B: no ratio after the run was stopped", rec.Peer)
		}
	}
	if n != 2 {
		t.Fatalf("%d records of the finished case, want 2", n)
	}
}

// childCount counts live processes whose parent is this process.
func childCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc here")
	}
	me := os.Getpid()
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if ppid, ok := statPPID(b); ok && ppid == me {
			n++
		}
	}
	return n
}

func statPPID(b []byte) (int, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // state, ppid, ...
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}
