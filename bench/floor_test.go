package bench

import (
	"bytes"
	"runtime"
	"sync/atomic"
	"testing"
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
