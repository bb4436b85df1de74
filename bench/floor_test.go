package bench

import (
	"bytes"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/pktipc/pktipc/perf"
)

// BenchmarkCopyFloor measures what bounds large messages over shared
// memory: how many 1 MiB copies the machine's processors make per second,
// every processor copying at once, between buffers that are in the cache
// ("hot": one buffer each way, reused) and between buffers that are not
// ("cold": each copy moves on through 256 MiB regions, far more than any
// last-level cache). An echo round trip over shared memory writes each
// message into the mapping and copies it once more (the server's reply out
// of the request), and 64 clients with a 1 MiB request each outstanding
// keep at least 64 MiB in flight, more than the cache holds: those are cold
// copies, so round trips per second stay below the cold rate divided by
// the copies each makes (two for a client that copies its request in, one
// and a half at best for one that writes it in place), whatever the
// layout.
//
//	go test ./bench -run X -bench CopyFloor
func BenchmarkCopyFloor(b *testing.B) {
	const (
		msg    = 1 << 20
		region = 256 << 20
	)
	for _, c := range []struct {
		name string
		span int
	}{{"hot", msg}, {"cold", region}} {
		b.Run(c.name, func(b *testing.B) {
			// One pair of regions per goroutine of RunParallel, every page
			// written before the clock starts.
			pairs := make([][2][]byte, runtime.GOMAXPROCS(0))
			for i := range pairs {
				src, dst := make([]byte, c.span), make([]byte, c.span)
				for k := range src {
					src[k] = byte(k / msg)
				}
				clear(dst)
				pairs[i] = [2][]byte{src, dst}
			}
			var next atomic.Int64
			b.SetBytes(msg)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				p := pairs[int(next.Add(1)-1)%len(pairs)]
				src, dst := p[0], p[1]
				slots := c.span / msg
				s, d := 0, 0
				for i := 0; pb.Next(); i++ {
					s, d = (i*7)%slots*msg, i%slots*msg
					copy(dst[d:d+msg], src[s:s+msg])
				}
				if !bytes.Equal(dst[d:d+msg], src[s:s+msg]) {
					b.Error("the last copy does not match its source")
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "copies/s")
		})
	}
}

// BenchmarkCrossCoreFloor measures what bounds a small round trip over
// shared memory, and with it every row whose cost is cache lines moving
// between the client's and the server's processors: a cache line's round
// trip between two processors, two threads pinned to the first two CPUs
// of the affinity set each waiting for the other's store before answering
// with its own. On a virtual machine the answer moves as the host moves
// the virtual processors (onto hyperthreads of one core, onto cores that
// share a cache or not), and it can move several-fold within seconds;
// running it before and after a benchmark tells which the benchmark saw.
//
//	go test ./bench -run X -bench CrossCoreFloor -count 5
func BenchmarkCrossCoreFloor(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpus, err := perf.Affinity()
	if err != nil || len(cpus) < 2 {
		b.Skipf("needs two CPUs to pin to: %v, %v", cpus, err)
	}
	restore := cpus
	if err := perf.SetAffinity(cpus[0]); err != nil {
		b.Skip(err)
	}
	defer perf.SetAffinity(restore...)
	var words struct {
		ping atomic.Int64
		_    [56]byte
		pong atomic.Int64
	}
	n := int64(b.N)
	done := make(chan error, 1)
	go func() {
		// Locked to its thread until it returns: the thread, pinned, ends
		// with it.
		runtime.LockOSThread()
		if err := perf.SetAffinity(cpus[1]); err != nil {
			words.pong.Store(-1)
			done <- err
			return
		}
		for i := int64(1); i <= n; i++ {
			for words.ping.Load() != i {
			}
			words.pong.Store(i)
		}
		done <- nil
	}()
	b.ResetTimer()
	for i := int64(1); i <= n; i++ {
		words.ping.Store(i)
		for v := words.pong.Load(); v != i; v = words.pong.Load() {
			if v < 0 {
				b.Fatal(<-done)
			}
		}
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
