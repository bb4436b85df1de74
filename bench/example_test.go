package bench_test

import (
	"fmt"

	"github.com/pktipc/pktipc/bench"
)

func ExampleParseSizes() {
	sizes, err := bench.ParseSizes("64,4K,1MiB")
	fmt.Println(sizes, err)
	// Output: [64 4096 1048576] <nil>
}

// A selection expands into runs: each case against each peer that supports
// it, baselines first.
func ExampleSelection_Plan() {
	plan, err := bench.Selection{
		Peers:     []string{"unix", "c"},
		Scenarios: []bench.Kind{bench.PingPong},
		Sizes:     []int{64, 4096},
	}.Plan()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range plan.Runs {
		fmt.Println(r.Peer, r.Case)
	}
	// Output:
	// c pingpong size=64 conns=1
	// unix pingpong size=64 conns=1
	// c pingpong size=4096 conns=1
	// unix pingpong size=4096 conns=1
}
