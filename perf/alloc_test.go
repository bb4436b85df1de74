//go:build !race

package perf

import (
	"errors"
	"testing"
)

// Reading the clock and the counters around every measured window must not
// allocate: the measuring would disturb what it measures.
func TestReadsDoNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Now() }); n != 0 {
		t.Errorf("Now allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = ProcessCPU() }); n != 0 {
		t.Errorf("ProcessCPU allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = PidCPUClock(1) }); n != 0 {
		t.Errorf("PidCPUClock allocates %v times", n)
	}
	c, err := OpenCounters(0, ContextSwitches)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("no counters here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var s Sample
	if n := testing.AllocsPerRun(100, func() { s, _ = c.Read(); _ = s.Sub(s) }); n != 0 {
		t.Errorf("Counters.Read allocates %v times", n)
	}
}

func BenchmarkNow(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = Now()
	}
}

func BenchmarkPidCPUClock(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_, _ = PidCPUClock(1)
	}
}
