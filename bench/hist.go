package bench

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram geometry: nanoseconds from 1 ns to 60 s at 3 significant
// digits (0.1% resolution), about 220 KB per histogram.
const (
	histMin     = 1
	histMax     = int64(60 * time.Second)
	histSigFigs = 3
	// maxShards bounds the histograms a run keeps: 1024 clients with one
	// histogram each would hold 220 MB, so clients share a few, each behind
	// its own lock.
	maxShards = 8
	// flushEvery is how many samples a client buffers before taking its
	// shard's lock.
	flushEvery = 256
)

// Histogram is the HDR histogram type of every record.
type Histogram = hdrhistogram.Histogram

// NewHistogram returns an empty latency histogram with the geometry every
// record uses (nanoseconds, 1 ns to 60 s, 3 significant digits).
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMin, histMax, histSigFigs)
}

// clampNS keeps a sample inside the histogram's range: a value above 60 s
// would be dropped, and one below 1 ns cannot be told apart from "no
// sample".
func clampNS(v int64) int64 {
	return min(max(v, histMin), histMax)
}

// Recorder collects latency samples from many goroutines into a few
// histograms. Each client goroutine gets a Sampler; Merged combines all
// shards once the clients are done.
type Recorder struct {
	shards []recShard
}

type recShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// NewRecorder returns a Recorder for the given number of clients.
func NewRecorder(clients int) *Recorder {
	n := min(max(clients, 1), maxShards)
	r := &Recorder{shards: make([]recShard, n)}
	for i := range r.shards {
		r.shards[i].h = NewHistogram()
	}
	return r
}

// Sampler buffers one client's samples. It belongs to one goroutine; call
// Flush before the Recorder is merged.
type Sampler struct {
	shard *recShard
	buf   []int64
	n     int64
}

// Sampler returns the sampler of client i. Safe for concurrent use.
func (r *Recorder) Sampler(i int) *Sampler {
	return &Sampler{shard: &r.shards[i%len(r.shards)], buf: make([]int64, 0, flushEvery)}
}

// Record adds one latency in nanoseconds and reports whether it moved
// the buffered samples into the shared histogram meanwhile, which takes
// a while. Call it from the sampler's goroutine.
func (s *Sampler) Record(ns int64) (flushed bool) {
	s.buf = append(s.buf, ns)
	s.n++
	if len(s.buf) == cap(s.buf) {
		s.Flush()
		return true
	}
	return false
}

// Count returns how many samples were recorded. Call it from the sampler's
// goroutine.
func (s *Sampler) Count() int64 { return s.n }

// Flush moves buffered samples into the shared histogram. Call it from the
// sampler's goroutine.
func (s *Sampler) Flush() {
	if len(s.buf) == 0 {
		return
	}
	s.shard.mu.Lock()
	for _, v := range s.buf {
		s.shard.h.RecordValue(clampNS(v)) // cannot fail once clamped
	}
	s.shard.mu.Unlock()
	s.buf = s.buf[:0]
}

// Merged returns one histogram holding every flushed sample. Call it after
// every Sampler was flushed; any goroutine may.
func (r *Recorder) Merged() *hdrhistogram.Histogram {
	h := NewHistogram()
	for i := range r.shards {
		r.shards[i].mu.Lock()
		h.Merge(r.shards[i].h)
		r.shards[i].mu.Unlock()
	}
	return h
}
