package bench

import (
	"fmt"
	"strings"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pktipc/pktipc/perf"
)

// Latency summarises a histogram, in nanoseconds.
type Latency struct {
	Min  int64   `json:"min"`
	P50  int64   `json:"p50"`
	P90  int64   `json:"p90"`
	P99  int64   `json:"p99"`
	P999 int64   `json:"p99_9"`
	Max  int64   `json:"max"`
	Mean float64 `json:"mean"`
}

// CounterRates are perf counter events per operation; nil means "n/a" (the
// kernel refused the event, or no counters were asked for).
type CounterRates struct {
	Cycles          *float64 `json:"cycles_per_op,omitempty"`
	Instructions    *float64 `json:"instructions_per_op,omitempty"`
	ContextSwitches *float64 `json:"context_switches_per_op,omitempty"`
}

// CDFPoint is one point of a latency distribution: the fraction of
// operations (0..1) that took at most NS nanoseconds.
type CDFPoint struct {
	Quantile float64 `json:"q"`
	NS       int64   `json:"ns"`
}

// Record is the result of one run. It is JSON-serialisable; the histogram
// itself travels as its CDF.
type Record struct {
	Case
	Peer       string  `json:"peer"`
	DurationNS int64   `json:"duration_ns"` // measured window
	Ops        int64   `json:"ops"`
	Errors     int64   `json:"errors"`
	Latency    Latency `json:"latency_ns"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	// BytesPerSec counts payload bytes of requests and replies.
	BytesPerSec float64 `json:"bytes_per_sec"`
	// CPU time per operation in nanoseconds; -1 when it could not be read.
	ClientCPUPerOp float64      `json:"client_cpu_ns_per_op"`
	ServerCPUPerOp float64      `json:"server_cpu_ns_per_op"`
	ClientCounters CounterRates `json:"client_counters"`
	ServerCounters CounterRates `json:"server_counters"`
	// XUnix and XC compare this record's headline with the same case's
	// "unix" and "c" records: latency scenarios divide p50 by the
	// baseline's, throughput scenarios divide the baseline's throughput by
	// this one's. Below 1 is better than the baseline; nil when the
	// baseline did not run.
	XUnix *float64   `json:"x_unix,omitempty"`
	XC    *float64   `json:"x_c,omitempty"`
	CDF   []CDFPoint `json:"cdf,omitempty"`
	Notes []string   `json:"notes,omitempty"`
	// RoundHeadlines are the headlines of the case's rounds for this peer,
	// in the order they ran, when it ran in several (Selection.Rounds);
	// the record is the run of their median.
	RoundHeadlines []float64 `json:"round_headlines,omitempty"`

	hist *hdrhistogram.Histogram
}

// Histogram returns the run's latency histogram; nil for a record decoded
// from JSON. The Record's methods only read and are safe for concurrent use.
func (r *Record) Histogram() *hdrhistogram.Histogram { return r.hist }

// Duration returns the measured window. Any goroutine may call it.
func (r *Record) Duration() time.Duration { return time.Duration(r.DurationNS) }

// Headline is the value the ratios compare: p50 latency in ns, or the
// throughput (bytes per second for stream, operations per second
// otherwise) for throughput-bound scenarios. Any goroutine may call it.
func (r *Record) Headline() float64 {
	switch {
	case r.Scenario == Stream:
		return r.BytesPerSec
	case r.Scenario.ThroughputBound():
		return r.OpsPerSec
	}
	return float64(r.Latency.P50)
}

// ratioTo computes this record's headline against base's.
func (r *Record) ratioTo(base *Record) *float64 {
	a, b := r.Headline(), base.Headline()
	if a <= 0 || b <= 0 {
		return nil
	}
	x := a / b
	if r.Scenario.ThroughputBound() {
		x = b / a
	}
	return &x
}

// summarize fills the latency fields from h.
func summarize(h *hdrhistogram.Histogram) (Latency, []CDFPoint) {
	lat := Latency{
		Min:  h.Min(),
		P50:  h.ValueAtQuantile(50),
		P90:  h.ValueAtQuantile(90),
		P99:  h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9),
		Max:  h.Max(),
		Mean: h.Mean(),
	}
	values := h.ValueAtPercentilesSlice(cdfPercentiles)
	cdf := make([]CDFPoint, len(values))
	for i, v := range values {
		cdf[i] = CDFPoint{Quantile: cdfPercentiles[i] / 100, NS: v}
	}
	return lat, cdf
}

// cdfPercentiles are the points of a record's CDF: every 2.5% for the body,
// denser in the tail, where latency charts need their detail.
var cdfPercentiles = func() []float64 {
	var ps []float64
	for p := 0.0; p < 97.5; p += 2.5 {
		ps = append(ps, p)
	}
	return append(ps, 97.5, 98, 99, 99.5, 99.9, 99.95, 99.99, 100)
}()

func perOp(v uint64, ok bool, ops int64) *float64 {
	if !ok || ops <= 0 {
		return nil
	}
	x := float64(v) / float64(ops)
	return &x
}

func rates(d perf.Sample, ops int64) CounterRates {
	var c CounterRates
	c.Cycles = perOp2(d, perf.Cycles, ops)
	c.Instructions = perOp2(d, perf.Instructions, ops)
	c.ContextSwitches = perOp2(d, perf.ContextSwitches, ops)
	return c
}

func perOp2(d perf.Sample, e perf.Event, ops int64) *float64 {
	v, ok := d.Value(e)
	return perOp(v, ok, ops)
}

// buildRecord turns a client's Load and the Meter's readings into a Record.
func buildRecord(run Run, load Load, m *Meter) (Record, error) {
	rec := Record{Case: run.Case, Peer: run.Peer, Errors: load.Errors, Notes: append(load.Notes, m.notes...)}
	if !m.stopped {
		return rec, ErrNoWindow
	}
	if load.Hist == nil || load.Hist.TotalCount() == 0 {
		if len(load.Notes) > 0 { // the clients' first error says why
			return rec, fmt.Errorf("%w: %s", ErrNoOps, strings.Join(load.Notes, "; "))
		}
		return rec, ErrNoOps
	}
	w := m.window(load.Window)
	rec.hist = load.Hist
	rec.Ops = load.Hist.TotalCount()
	rec.DurationNS = int64(w.elapsed)
	rec.Latency, rec.CDF = summarize(load.Hist)
	if secs := w.elapsed.Seconds(); secs > 0 {
		rec.OpsPerSec = float64(rec.Ops) / secs
		rec.BytesPerSec = float64(load.Bytes) / secs
	}
	rec.ClientCPUPerOp, rec.ServerCPUPerOp = -1, -1
	if w.cliCPUOK {
		rec.ClientCPUPerOp = float64(w.cliCPU) / float64(rec.Ops)
	}
	if w.srvCPUOK {
		rec.ServerCPUPerOp = float64(w.srvCPU) / float64(rec.Ops)
	}
	rec.Notes = append(rec.Notes, w.notes...)
	if w.srvCounters {
		rec.ServerCounters = rates(m.srvS1.Sub(m.srvS0), rec.Ops)
	}
	if w.cliCounters {
		rec.ClientCounters = rates(m.cliS1.Sub(m.cliS0), rec.Ops)
	}
	return rec, nil
}
