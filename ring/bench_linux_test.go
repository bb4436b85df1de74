//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"
)

// echo serves requests from r by writing each record back to w, record by
// record, until r ends.
func echo(r *Reader, w *Writer) error {
	for {
		p, more, err := r.Next()
		if err != nil {
			return err
		}
		b, err := w.Reserve(len(p))
		if err != nil {
			return err
		}
		copy(b, p)
		w.Commit(len(p), more)
		r.Release()
	}
}

// childEcho is the echo server of a process benchmark: requests on
// descriptor 3, replies on 4.
func childEcho(req, rep *os.File) int {
	opts := &Options{}
	if os.Getenv(childEnv+"_PARK") != "" {
		opts.Spin = -1
	}
	r, err := NewReader(req, opts)
	if err != nil {
		return 1
	}
	w, err := NewWriter(rep, opts)
	if err != nil {
		return 1
	}
	fmt.Println("ready")
	echo(r, w)
	return 0
}

// echoPair makes a request ring and a reply ring of the given capacity:
// the client's sides, and the files for the server's.
func echoPair(b *testing.B, capacity int, opts *Options) (w *Writer, r *Reader, req, rep *os.File) {
	b.Helper()
	var err error
	if req, err = Create(capacity); err != nil {
		b.Fatal(err)
	}
	if rep, err = Create(capacity); err != nil {
		b.Fatal(err)
	}
	if w, err = NewWriter(req, opts); err != nil {
		b.Fatal(err)
	}
	if r, err = NewReader(rep, opts); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		w.Close()
		r.Close()
		req.Close()
		rep.Close()
	})
	return w, r, req, rep
}

// roundTrips sends b.N messages of size bytes and reads each echo. Besides
// the mean it reports the median and the 99th percentile round trip, since
// a mean over a shared machine is dominated by the rare descheduling.
func roundTrips(b *testing.B, w *Writer, r *Reader, size int) {
	b.Helper()
	msg := make([]byte, size)
	buf := make([]byte, 0, size)
	took := make([]time.Duration, b.N)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
		var err error
		if buf, err = r.ReadMessage(buf[:0], size); err != nil {
			b.Fatal(err)
		}
		took[i] = time.Since(start)
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds()), "p99-ns")
}

var benchSizes = []int{64, 4 << 10, 1 << 20}

// BenchmarkPingPong: round trips between two goroutines of this process.
func BenchmarkPingPong(b *testing.B) {
	for _, spin := range []string{"spin", "park"} {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", spin, size), func(b *testing.B) {
				opts := &Options{}
				if spin == "park" {
					opts.Spin = -1
				}
				w, r, req, rep := echoPair(b, 1<<20, opts)
				sr, err := NewReader(req, opts)
				if err != nil {
					b.Fatal(err)
				}
				sw, err := NewWriter(rep, opts)
				if err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				wg.Go(func() { echo(sr, sw) })
				roundTrips(b, w, r, size)
				w.Close()
				wg.Wait()
				sr.Close()
				sw.Close()
			})
		}
	}
}

// BenchmarkPingPongProcess: round trips with an echo server in another
// process, as a ring is meant to be used; both sides spinning, or both
// parking at once.
func BenchmarkPingPongProcess(b *testing.B) {
	for _, mode := range []string{"spin", "park"} {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", mode, size), func(b *testing.B) {
				opts := &Options{}
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), childEnv+"=echo")
				if mode == "park" {
					opts.Spin = -1
					cmd.Env = append(cmd.Env, childEnv+"_PARK=1")
				}
				w, r, req, rep := echoPair(b, 1<<20, opts)
				cmd.ExtraFiles = []*os.File{req, rep}
				out, err := cmd.StdoutPipe()
				if err != nil {
					b.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				defer cmd.Wait()
				defer cmd.Process.Kill()
				if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
					b.Fatalf("echo child: %q", line)
				}
				roundTrips(b, w, r, size)
			})
		}
	}
}

// BenchmarkStream: one-way messages, the writer committing as fast as it
// can and the reader draining in another goroutine.
func BenchmarkStream(b *testing.B) {
	for _, size := range []int{64, 1 << 20} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			w, _, req, _ := echoPair(b, 4<<20, nil)
			r, err := NewReader(req, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			var wg sync.WaitGroup
			wg.Go(func() {
				buf := make([]byte, 0, size)
				for range b.N {
					if buf, err = r.ReadMessage(buf[:0], size); err != nil {
						return
					}
				}
			})
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := w.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkStreamBatch: one-way 64-byte records staged in batches, each
// batch published with one store of the tail.
func BenchmarkStreamBatch(b *testing.B) {
	const size, batch = 64, 64
	w, _, req, _ := echoPair(b, 4<<20, nil)
	r, err := NewReader(req, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range b.N {
			if _, _, err = r.Next(); err != nil {
				return
			}
			r.Release()
		}
	})
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p, err := w.Reserve(size)
		if err != nil {
			b.Fatal(err)
		}
		p[0] = byte(i)
		w.Stage(size, false)
		if i%batch == batch-1 {
			w.Flush()
		}
	}
	w.Flush()
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
}
