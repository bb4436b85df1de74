package plot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/bench"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func results() *bench.Results {
	rec := func(peer string, c bench.Case, p50 int64, ops float64) bench.Record {
		return bench.Record{Case: c, Peer: peer, DurationNS: int64(time.Second), Ops: int64(ops), OpsPerSec: ops,
			Latency: bench.Latency{Min: p50 / 2, P50: p50, Max: 4 * p50},
			CDF:     []bench.CDFPoint{{Quantile: 0, NS: p50 / 2}, {Quantile: 0.5, NS: p50}, {Quantile: 0.99, NS: 3 * p50}, {Quantile: 1, NS: 4 * p50}}}
	}
	pp := bench.Case{Scenario: bench.PingPong, Size: 64, Conns: 1}
	c1 := bench.Case{Scenario: bench.Concurrency, Size: 64, Conns: 1}
	c8 := bench.Case{Scenario: bench.Concurrency, Size: 64, Conns: 8}
	st := bench.Case{Scenario: bench.Stream, Size: 4096, Conns: 1}
	return &bench.Results{
		Cases: []bench.Case{pp, c1, c8, st},
		Records: []bench.Record{
			rec("c", pp, 20000, 40000), rec("unix", pp, 38000, 25000),
			rec("c", c1, 20000, 40000), rec("unix", c1, 38000, 25000),
			rec("c", c8, 80000, 80000), rec("unix", c8, 60000, 90000),
			rec("unix", st, 2000, 180000),
		},
	}
}

func TestWriteAll(t *testing.T) {
	dir := t.TempDir()
	plots := filepath.Join(dir, "docs", "bench")
	charts, err := WriteAll(plots, dir, results())
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, c := range charts {
		paths = append(paths, c.Path)
		b, err := os.ReadFile(filepath.Join(dir, c.Path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("unix")) {
			t.Errorf("%s is not an SVG with a legend", c.Path)
		}
	}
	want := "docs/bench/cdf-pingpong-64-c1.svg docs/bench/cdf-concurrency-64-c1.svg docs/bench/cdf-concurrency-64-c8.svg docs/bench/throughput-concurrency.svg"
	if got := strings.Join(paths, " "); got != want {
		t.Errorf("charts %s\nwant %s", got, want)
	}
	if ents, _ := os.ReadDir(plots); len(ents) != len(charts) {
		t.Errorf("%d files for %d charts", len(ents), len(charts))
	}
}

func TestNoData(t *testing.T) {
	var b bytes.Buffer
	if err := LatencyCDF(&b, "empty", nil); !errors.Is(err, ErrNoData) {
		t.Errorf("LatencyCDF(nil) = %v", err)
	}
	if err := Throughput(&b, "empty", nil); !errors.Is(err, ErrNoData) {
		t.Errorf("Throughput(nil) = %v", err)
	}
	if err := LatencyCDF(&b, "no cdf", []*bench.Record{{Peer: "x"}}); !errors.Is(err, ErrNoData) {
		t.Errorf("LatencyCDF without points = %v", err)
	}
}
