package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/perf"
	"github.com/pktipc/pktipc/uds"
)

// nonReading: the server's CPU while 300 connections wait for their peers
// to read replies they never read.
func (t *torture) nonReading(ctx context.Context, r *TortureReport) error {
	srv, socket, err := t.server(ctx, tortureSettings{})
	if err != nil {
		return err
	}
	defer t.stopServer(r, srv)
	const conns = 300
	var held []*net.UnixConn
	defer func() { closeConns(held) }()
	for range conns {
		c, err := dialBacklog(ctx, socket)
		if err != nil {
			return err
		}
		held = append(held, c)
		if _, err := c.Write([]byte("0007big0000")); err != nil {
			return err
		}
	}
	time.Sleep(time.Second)               // every reply is queued
	wait := min(t.o.Phase, 8*time.Second) // within the write timeout
	t.progress("%d non-reading connections for %v", conns, wait)
	cpu0, at0 := serverCPU(srv.pid()), time.Now()
	if !sleepCtx(ctx, wait) {
		return ctx.Err()
	}
	cpu := serverCPU(srv.pid()) - cpu0
	share := cpu.Seconds() / time.Since(at0).Seconds()
	// They are all still there, their replies queued: a server that had
	// closed them would idle too. Its descriptors count them.
	fds := -1
	if m, err := perf.PidMemory(srv.pid()); err == nil {
		fds = m.FDs
	}
	r.check("server descriptors after the wait", fds >= conns, fmt.Sprintf(">= %d, one per connection", conns), "%d", fds)
	r.check("server CPU", share < 0.02, "< 2% of a core", "%.2f%% of a core (%v in %v)", 100*share, cpu.Round(time.Millisecond), wait)
	t.answers(ctx, r, "a ping beside them", socket)
	return nil
}

// memory: the server's resident memory while 1,024 connections send 15 MiB
// requests that never end, and ten seconds after they are gone.
func (t *torture) memory(ctx context.Context, r *TortureReport) error {
	const conns, each = 1024, 15 << 20
	settings := tortureSettings{Budget: t.o.Budget, MaxConns: 4096, MaxPerUID: 4096, FirstByte: time.Minute}
	srv, socket, err := t.server(ctx, settings)
	if err != nil {
		return err
	}
	defer t.stopServer(r, srv)
	pid := srv.pid()
	cs, err := dialConns(ctx, socket, conns)
	defer func() { closeConns(cs) }()
	if err != nil {
		return err
	}
	// Settle, and warm the server's buffers up with one large request, so
	// that the baseline is the server at work, not one that never was.
	if _, err := engine.Send(ctx, socket, make([]byte, 1<<20), engine.WithDialOptions(uds.WaitIfBusy())); err != nil {
		return err
	}
	time.Sleep(time.Second)
	base := rss(pid)
	t.progress("%d connections send %d MiB each, never ending it (budget %s, baseline %s)", conns, each>>20, mib(t.o.Budget), mib(base))
	during, sent, took := floodUnterminated(ctx, pid, cs, each)
	closeConns(cs)
	cs = nil
	t.progress("storm over in %v (%s sent); waiting 10 s", took.Round(time.Millisecond), mib(sent))
	if !sleepCtx(ctx, 10*time.Second) {
		return ctx.Err()
	}
	after := rss(pid)
	r.check("peak resident memory", during > 0 && during <= t.o.Budget+base, "<= budget + baseline = "+mib(t.o.Budget+base),
		"%s (budget %s, baseline with %d idle connections %s)", mib(during), mib(t.o.Budget), conns, mib(base))
	r.check("resident memory 10 s after", after > 0 && after <= 2*base, "<= 2x baseline = "+mib(2*base), "%s", mib(after))
	t.answers(ctx, r, "a ping after the flood", socket)
	r.info("bytes the attackers wrote", "%s in %v", mib(sent), took.Round(time.Millisecond))
	return nil
}

// floodUnterminated writes the first each bytes of a request that never
// ends on every connection at once, sampling pid's resident memory, and
// returns the peak (the kernel's high-water mark, if larger than the
// samples: a spike between two would pass unseen), the bytes the
// attackers wrote (the kernel took them; the server may not have read the
// last socket buffer's worth of each) and how long they took; peak is -1
// if pid is gone.
func floodUnterminated(ctx context.Context, pid int, cs []*net.UnixConn, each int) (peak, sent int64, took time.Duration) {
	var top, total atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sleepCtx(sampleCtx, 20*time.Millisecond) {
			if m := rss(pid); m > top.Load() {
				top.Store(m)
			}
		}
	})
	chunk := frame.AppendData(nil, make([]byte, frame.MaxPacketSize-frame.HeaderSize))
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range cs {
		wg.Go(func() {
			_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
			for n := 0; n < each; n += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return // closed for the budget
				}
				total.Add(int64(len(chunk)))
			}
		})
	}
	wg.Wait()
	took = time.Since(start)
	time.Sleep(500 * time.Millisecond)
	stopSampling()
	sampler.Wait()
	peak = -1
	if m, err := perf.PidMemory(pid); err == nil {
		peak = max(top.Load(), m.PeakRSS)
	}
	return peak, total.Load(), took
}

// idle: the server's resident memory with 10,000 idle connections, and a
// ping's latency beside them against the same ping alone.
func (t *torture) idle(ctx context.Context, r *TortureReport) error {
	const conns = 10_000
	srv, socket, err := t.server(ctx, tortureSettings{MaxConns: 20000, MaxPerUID: 20000, FirstByte: 10 * time.Minute})
	if err != nil {
		return err
	}
	defer t.stopServer(r, srv)
	alone, err := pingLatency(ctx, socket, 2000)
	if err != nil {
		return fmt.Errorf("ping alone: %w", err)
	}
	before := rss(srv.pid())
	cs, err := dialConns(ctx, socket, conns)
	defer func() { closeConns(cs) }()
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	m := rss(srv.pid())
	beside, err := pingLatency(ctx, socket, 2000)
	if err != nil {
		return fmt.Errorf("ping beside %d idle connections: %w", conns, err)
	}
	// This binary carries every benchmark peer (gRPC, plots...), about
	// 17 MiB before the first connection; the engine's own share is the
	// growth. engine's TestIdleConnectionsMemory holds a server that is
	// only the engine to 32 MiB in all.
	r.check("server resident memory growth", m-before < 16<<20, "< 16 MiB", "%s with %d idle connections (%s, %s before them)", mib(m-before), conns, mib(m), mib(before))
	a99, b99 := alone.ValueAtQuantile(99), beside.ValueAtQuantile(99)
	r.check("ping p99 beside them / alone", float64(b99) <= 2*float64(a99), "<= 2x", "%.2fx (%s / %s)",
		float64(b99)/float64(max(a99, 1)), FormatNS(float64(b99)), FormatNS(float64(a99)))
	return nil
}

// dialBacklog connects, waiting while the server's listen backlog is full
// (a burst of connections outpaces its accept loop).
func dialBacklog(ctx context.Context, socket string) (*net.UnixConn, error) {
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
		if !errors.Is(err, syscall.EAGAIN) {
			return c, err
		}
		if !sleepCtx(ctx, time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// dialConns opens n connections with dialBacklog; on failure it returns
// those it opened, for the caller to close, with the error.
func dialConns(ctx context.Context, socket string, n int) ([]*net.UnixConn, error) {
	cs := make([]*net.UnixConn, 0, n)
	for range n {
		c, err := dialBacklog(ctx, socket)
		if err != nil {
			return cs, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func closeConns(cs []*net.UnixConn) {
	for _, c := range cs {
		c.Close()
	}
}

// pingLatency measures n pings on one persistent connection, each
// answered "pong" (git's test daemon's answer); any failure
// fails the measurement, so that a check never compares empty histograms.
func pingLatency(ctx context.Context, socket string, n int) (*Histogram, error) {
	h := NewHistogram()
	c, err := dialWait(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for i := range n {
		start := time.Now()
		got, err := c.Call([]byte("ping"))
		if err != nil {
			return nil, fmt.Errorf("ping %d of %d: %w", i+1, n, err)
		}
		if string(got) != "pong" {
			return nil, fmt.Errorf("ping %d of %d: answered %.20q", i+1, n, got)
		}
		_ = h.RecordValue(clampNS(time.Since(start).Nanoseconds()))
	}
	return h, nil
}

// pipelined: sixteen pipelined 4 MiB replies on one connection against one
// alone, from another process.
func (t *torture) pipelined(ctx context.Context, r *TortureReport) error {
	srv, socket, err := t.server(ctx, tortureSettings{})
	if err != nil {
		return err
	}
	defer t.stopServer(r, srv)
	c, err := dialWait(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	req := appendSized(nil, 4<<20)
	var lone, piped time.Duration
	rounds := 0
	for end := time.Now().Add(t.o.Phase); time.Now().Before(end) || rounds < 3; rounds++ {
		start := time.Now()
		if _, err := c.Call(req); err != nil {
			return err
		}
		mid := time.Now()
		for range 16 {
			if err := c.Send(req); err != nil {
				return err
			}
		}
		for range 16 {
			if reply, err := c.Recv(); err != nil || len(reply) != 4<<20 {
				return fmt.Errorf("pipelined reply: %d bytes, %v", len(reply), err)
			}
		}
		lone += mid.Sub(start)
		piped += time.Since(mid)
	}
	per := piped / time.Duration(16*rounds)
	one := lone / time.Duration(rounds)
	ratio := float64(per) / float64(one)
	r.check("time per pipelined reply / a lone reply", ratio <= 1.5, "<= 1.5x", "%.2fx (%v / %v, %d rounds)", ratio, per.Round(time.Microsecond), one.Round(time.Microsecond), rounds)
	return nil
}
