//go:build linux

package events

import (
	"context"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// echo serves l until it is closed: every message is written back.
func echo(l *Loop) {
	for {
		ev, err := l.WaitEvent(context.Background())
		if err != nil {
			return
		}
		if ev.Kind == MessageRx {
			l.WriteTyped(ev.Conn, ev.UserType, ev.Data)
		}
	}
}

// BenchmarkRoundTrip: a 64-byte message to an echoing Loop and back,
// through WaitEvent and Write on both sides, in one process.
func BenchmarkRoundTrip(b *testing.B) {
	for _, spin := range []time.Duration{0, 50 * time.Microsecond} {
		b.Run("spin="+spin.String(), func(b *testing.B) {
			srv := newTestLoop(b, WithSpin(spin))
			cli := newTestLoop(b, WithSpin(spin))
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := srv.AddConn(fds[0], PktLine); err != nil {
				b.Fatal(err)
			}
			id, err := cli.AddConn(fds[1], PktLine)
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Go(func() { echo(srv) })
			defer wg.Wait()
			defer srv.Close()
			msg := make([]byte, 64)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := cli.Write(id, msg); err != nil {
					b.Fatal(err)
				}
				if ev, err := cli.WaitEvent(ctx); err != nil || ev.Kind != MessageRx {
					b.Fatal(ev.Kind, err)
				}
			}
		})
	}
}

// BenchmarkManyClients: 1,000 connected clients, each with one 64-byte
// request in flight at a time, served by one Loop. Reported beside the
// time per request: the median and the worst of the clients' own p50 and
// p99 round trips, which are close when the Loop is fair.
func BenchmarkManyClients(b *testing.B) {
	const clients = 1000
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if lim.Cur < 3*clients {
		b.Skipf("RLIMIT_NOFILE %d is too low for %d clients", lim.Cur, clients)
	}
	srv := newTestLoop(b)
	conns := make([]net.Conn, clients)
	for i := range conns {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := srv.AddConn(fds[0], LibIPC); err != nil {
			b.Fatal(err)
		}
		f := os.NewFile(uintptr(fds[1]), "client")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	wg.Go(func() { echo(srv) })
	defer func() {
		srv.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	}()
	per := max(b.N/clients, 1)
	lat := make([][]time.Duration, clients)
	req := make([]byte, 4+64)
	req[3] = 64
	b.ReportAllocs()
	b.ResetTimer()
	var cw sync.WaitGroup
	for i, c := range conns {
		cw.Go(func() {
			buf := make([]byte, len(req))
			d := make([]time.Duration, 0, per)
			for k := 0; k < per; k++ {
				t0 := time.Now()
				if _, err := c.Write(req); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Error(err)
					return
				}
				d = append(d, time.Since(t0))
			}
			lat[i] = d
		})
	}
	cw.Wait()
	b.StopTimer()
	var p50s, p99s []time.Duration
	for _, d := range lat {
		slices.Sort(d)
		p50s = append(p50s, d[len(d)/2])
		p99s = append(p99s, d[len(d)*99/100])
	}
	slices.Sort(p50s)
	slices.Sort(p99s)
	b.ReportMetric(float64(p50s[len(p50s)/2].Microseconds()), "p50-µs/median-client")
	b.ReportMetric(float64(p50s[len(p50s)-1].Microseconds()), "p50-µs/worst-client")
	b.ReportMetric(float64(p99s[len(p99s)/2].Microseconds()), "p99-µs/median-client")
	b.ReportMetric(float64(p99s[len(p99s)-1].Microseconds()), "p99-µs/worst-client")
}
