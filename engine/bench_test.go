package engine

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/frame"
)

// netUnixServer is the baseline a Go user would write: a goroutine per
// connection, pkt-line framing, persistent connections.
func netUnixServer(b *testing.B, path string) (stop func()) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := frame.NewReader(c, frame.Persistent, 16<<20)
				var out []byte
				for {
					msg, err := r.ReadMessage()
					if err != nil {
						return
					}
					out = frame.AppendMessage(out[:0], msg)
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}()
		}
	}()
	return func() { ln.Close(); wg.Wait() }
}

// roundTripper is one client connection of a benchmark.
type roundTripper interface {
	Call(req []byte) ([]byte, error)
	Close() error
}

type netUnixClient struct {
	c   *net.UnixConn
	r   *frame.Reader
	out []byte
}

func (n *netUnixClient) Call(req []byte) ([]byte, error) {
	n.out = frame.AppendMessage(n.out[:0], req)
	if _, err := n.c.Write(n.out); err != nil {
		return nil, err
	}
	return n.r.ReadMessage()
}

func (n *netUnixClient) Close() error { return n.c.Close() }

// benchServer starts the named server and returns a client constructor.
func benchServer(b *testing.B, kind string) func() roundTripper {
	path := socketPath(b)
	if kind == "net.UnixConn" {
		b.Cleanup(netUnixServer(b, path))
		return func() roundTripper {
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				b.Fatal(err)
			}
			return &netUnixClient{c: c, r: frame.NewReader(c, frame.SimpleIPC, 16<<20)}
		}
	}
	s, err := NewServer(path, HandlerFunc(echoRaw), WithInlineHandlers(kind == "pktipc-inline"), WithRingLimits(64, 1<<20))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(context.Background()); close(done) }()
	b.Cleanup(func() { _ = s.Close(); <-done })
	var copts []ClientOption
	if kind == "pktipc-shm" {
		copts = append(copts, WithRings(1<<20))
	}
	return func() roundTripper {
		c, err := Dial(context.Background(), path, copts...)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
}

// reportLatency adds percentiles of the per-operation samples.
func reportLatency(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	q := func(p float64) float64 { return float64(samples[int(p*float64(len(samples)-1))].Nanoseconds()) }
	b.ReportMetric(q(0.5), "p50-ns")
	b.ReportMetric(q(0.99), "p99-ns")
}

var benchServers = []string{"pktipc-inline", "pktipc-pool", "pktipc-shm", "net.UnixConn"}

// BenchmarkRoundTrip: persistent request/reply of equal sizes, one client.
// Client and server share this process; ipcbench runs them apart.
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{64, 4096, 65536, 1 << 20} {
		for _, kind := range benchServers {
			b.Run(fmt.Sprintf("size=%d/server=%s", size, kind), func(b *testing.B) {
				newClient := benchServer(b, kind)
				c := newClient()
				defer c.Close()
				req := bytes.Repeat([]byte("a"), size)
				for range 100 {
					if _, err := c.Call(req); err != nil {
						b.Fatal(err)
					}
				}
				samples := make([]time.Duration, 0, 1<<16)
				b.SetBytes(int64(2 * size))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					t0 := time.Now()
					if _, err := c.Call(req); err != nil {
						b.Fatal(err)
					}
					if len(samples) < cap(samples) {
						samples = append(samples, time.Since(t0))
					}
				}
				b.StopTimer()
				reportLatency(b, samples)
			})
		}
	}
}

// BenchmarkConnectPerRequest: git's shape, a connection per request.
func BenchmarkConnectPerRequest(b *testing.B) {
	req := []byte("ping")
	b.Run("client=Send/server=pktipc-pool", func(b *testing.B) {
		path := socketPath(b)
		s, err := NewServer(path, HandlerFunc(gitDaemon))
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = s.Serve(context.Background()); close(done) }()
		defer func() { _ = s.Close(); <-done }()
		samples := make([]time.Duration, 0, 1<<16)
		b.ReportAllocs()
		for b.Loop() {
			t0 := time.Now()
			if _, err := Send(context.Background(), path, req); err != nil {
				b.Fatal(err)
			}
			if len(samples) < cap(samples) {
				samples = append(samples, time.Since(t0))
			}
		}
		reportLatency(b, samples)
	})
	b.Run("client=net.Dial/server=net.UnixConn", func(b *testing.B) {
		path := socketPath(b)
		b.Cleanup(netUnixServer(b, path))
		samples := make([]time.Duration, 0, 1<<16)
		b.ReportAllocs()
		for b.Loop() {
			t0 := time.Now()
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(frame.AppendMessage(nil, req)); err != nil {
				b.Fatal(err)
			}
			if _, err := frame.NewReader(c, frame.SimpleIPC, 1<<20).ReadMessage(); err != nil {
				b.Fatal(err)
			}
			c.Close()
			if len(samples) < cap(samples) {
				samples = append(samples, time.Since(t0))
			}
		}
		reportLatency(b, samples)
	})
}

// BenchmarkConcurrentClients: N persistent clients in parallel goroutines.
func BenchmarkConcurrentClients(b *testing.B) {
	for _, conns := range []int{1, 8, 64} {
		for _, kind := range benchServers {
			b.Run(fmt.Sprintf("conns=%d/server=%s", conns, kind), func(b *testing.B) {
				newClient := benchServer(b, kind)
				clients := make([]roundTripper, conns)
				for i := range clients {
					clients[i] = newClient()
					defer clients[i].Close()
				}
				req := bytes.Repeat([]byte("a"), 64)
				b.ReportAllocs()
				b.ResetTimer()
				var wg sync.WaitGroup
				per := b.N/conns + 1
				for _, c := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							if _, err := c.Call(req); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}

// BenchmarkPipelined: a window of requests in flight on one persistent
// connection (messages per second = window / ns/op).
func BenchmarkPipelined(b *testing.B) {
	const window = 64
	for _, kind := range []string{"pktipc-inline", "pktipc-pool"} {
		b.Run("size=4096/window=64/server="+kind, func(b *testing.B) {
			newClient := benchServer(b, kind)
			c := newClient().(*Client)
			defer c.Close()
			req := bytes.Repeat([]byte("a"), 4096)
			b.SetBytes(int64(2 * 4096 * window))
			b.ReportAllocs()
			for b.Loop() {
				for range window {
					if err := c.Send(req); err != nil {
						b.Fatal(err)
					}
				}
				for range window {
					if _, err := c.Recv(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(window*b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
