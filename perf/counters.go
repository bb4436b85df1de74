package perf

import "fmt"

// Event is one counter that OpenCounters can open.
type Event int

// The events pktipc's benchmarks report. Cycles and Instructions need a
// hardware PMU, which many virtual machines lack; ContextSwitches is a
// software event and is usually available.
const (
	Cycles Event = iota
	Instructions
	ContextSwitches
	numEvents
)

// AllEvents lists every Event, in report order.
var AllEvents = []Event{Cycles, Instructions, ContextSwitches}

func (e Event) String() string {
	switch e {
	case Cycles:
		return "cycles"
	case Instructions:
		return "instructions"
	case ContextSwitches:
		return "context-switches"
	}
	return fmt.Sprintf("event(%d)", int(e))
}

// Sample is one reading of a set of counters. An event that was not opened
// has no value.
type Sample struct {
	values [numEvents]uint64
	have   [numEvents]bool
}

// Value returns the count of e and whether e was counted.
func (s Sample) Value(e Event) (uint64, bool) {
	if e < 0 || e >= numEvents || !s.have[e] {
		return 0, false
	}
	return s.values[e], true
}

// Sub returns the counts of s minus those of base: the events between two
// readings. An event missing from either reading is missing from the result.
func (s Sample) Sub(base Sample) Sample {
	var d Sample
	for e := range numEvents {
		if s.have[e] && base.have[e] {
			d.have[e] = true
			d.values[e] = s.values[e] - base.values[e]
		}
	}
	return d
}
