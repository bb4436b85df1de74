package plot_test

import (
	"bytes"
	"fmt"

	"github.com/pktipc/pktipc/bench"
	"github.com/pktipc/pktipc/bench/plot"
)

func ExampleLatencyCDF() {
	rec := &bench.Record{Peer: "unix", CDF: []bench.CDFPoint{{Quantile: 0.5, NS: 38000}, {Quantile: 1, NS: 140000}}}
	var svg bytes.Buffer
	if err := plot.LatencyCDF(&svg, "pingpong, 64 B", []*bench.Record{rec}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(bytes.Contains(svg.Bytes(), []byte("<svg")))
	// Output: true
}
