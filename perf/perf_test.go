package perf_test

import (
	"fmt"
	"time"

	"github.com/pktipc/pktipc/perf"
)

func ExampleCPUTime_Sub() {
	before := perf.CPUTime{User: 3 * time.Millisecond, System: 1 * time.Millisecond}
	after := perf.CPUTime{User: 5 * time.Millisecond, System: 4 * time.Millisecond}
	d := after.Sub(before)
	fmt.Println(d.User, d.System, d.Total())
	// Output: 2ms 3ms 5ms
}

func ExampleSample_Sub() {
	var zero perf.Sample
	_, ok := zero.Sub(zero).Value(perf.Cycles)
	fmt.Println("cycles counted:", ok)
	// Output: cycles counted: false
}

// Counting events around a piece of work. Where the kernel refuses an event,
// Err says why and the report prints "n/a".
func ExampleOpenCounters() {
	c, err := perf.OpenCounters(0, perf.AllEvents...)
	if err != nil {
		fmt.Println("no counters:", err)
		return
	}
	defer c.Close()
	start, _ := c.Read()
	time.Sleep(time.Millisecond)
	end, _ := c.Read()
	d := end.Sub(start)
	for _, e := range perf.AllEvents {
		if v, ok := d.Value(e); ok {
			fmt.Println(e, v)
		} else {
			fmt.Println(e, "n/a:", c.Err(e))
		}
	}
}
