package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/perf"
	"github.com/pktipc/pktipc/uds"
)

// legit is a legitimate client that pings in a loop and records what it
// sees; oneShot clients use engine.Send (a connection per request), the
// others one persistent engine.Client.
type legit struct {
	oneShot bool
	hist    *Histogram
	errs    atomic.Int64
	first   error
	mu      sync.Mutex
}

func (l *legit) run(ctx context.Context, socket string) {
	var c *engine.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil {
		start := time.Now()
		var err error
		var reply []byte
		if l.oneShot {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			reply, err = engine.Send(rctx, socket, []byte("ping"))
			cancel()
		} else {
			if c == nil {
				if c, err = dialWait(ctx, socket); err != nil {
					c = nil
				}
			}
			if c != nil {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				reply, err = c.Call([]byte("ping"))
			}
		}
		if d, ok := ctx.Deadline(); ctx.Err() != nil || ok && !time.Now().Before(d) {
			return // the phase ended during the call
		}
		if err == nil && string(reply) != "pong" {
			err = fmt.Errorf("reply %q", reply)
		}
		l.mu.Lock()
		if err != nil {
			l.errs.Add(1)
			if l.first == nil {
				l.first = err
			}
		} else {
			_ = l.hist.RecordValue(clampNS(time.Since(start).Nanoseconds()))
		}
		l.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

// measureLegit runs a one-shot and a persistent client for d and returns
// them.
func measureLegit(ctx context.Context, socket string, d time.Duration) (oneShot, persistent *legit) {
	oneShot = &legit{oneShot: true, hist: NewHistogram()}
	persistent = &legit{hist: NewHistogram()}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range []*legit{oneShot, persistent} {
		wg.Go(func() { l.run(ctx, socket) })
	}
	wg.Wait()
	return oneShot, persistent
}

// attacker kinds of the storm.
const (
	attackSilent = iota
	attackPartial
	attackTrickle
	attackNonReading
)

// attack holds a connection of the given kind open, reconnecting when the
// server closes it, until ctx ends; it counts its connections.
func attack(ctx context.Context, socket string, kind int, conns *atomic.Int64) {
	buf := make([]byte, 4096)
	for ctx.Err() == nil {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
		if err != nil {
			if !sleepCtx(ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		conns.Add(1)
		stop := context.AfterFunc(ctx, func() { c.Close() })
		switch kind {
		case attackPartial:
			_, err = c.Write([]byte("0100partial"))
		case attackNonReading:
			_, err = c.Write([]byte("0007big0000"))
		}
		if err == nil && kind == attackTrickle {
			// One byte of a never-ending request every 100 ms.
			_, err = c.Write([]byte("fff0"))
			for err == nil {
				if !sleepCtx(ctx, 100*time.Millisecond) {
					break
				}
				_, err = c.Write([]byte{'x'})
			}
		}
		if err == nil && kind != attackNonReading {
			for { // until the server closes it
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
		} else if err == nil {
			<-ctx.Done() // never reads; the server closes it at its write deadline
		}
		stop()
		c.Close()
	}
}

const attackRole = "torture-attack"

func init() { RegisterServer(attackRole, serveAttack) }

// serveAttack is not a server: it is the storm's crowd, in a process of its
// own, as an attacker would be. Settings name how many connections of each
// kind (silent, partial, trickle, nonreading) to hold; each reconnects when
// the server closes it. It is ready once every connection was opened once.
func serveAttack(ctx context.Context, cfg ServerConfig, ready func()) error {
	var wg sync.WaitGroup
	var opened atomic.Int64
	total := 0
	for kind, name := range []string{"silent", "partial", "trickle", "nonreading"} {
		n, err := strconv.Atoi(cfg.Options[name])
		if err != nil && cfg.Options[name] != "" {
			return err
		}
		total += n
		for range n {
			wg.Go(func() { attack(ctx, cfg.Socket, kind, &opened) })
		}
	}
	for opened.Load() < int64(total) && sleepCtx(ctx, 10*time.Millisecond) {
	}
	ready()
	wg.Wait()
	return nil
}

// storm: legitimate clients measured alone, then beside a crowd of
// attackers that reconnect whenever they are closed.
func (t *torture) storm(ctx context.Context, r *TortureReport) error {
	srv, socket, err := t.server(ctx, nil)
	if err != nil {
		return err
	}
	defer srv.stop()
	t.progress("quiet phase (%v, after a second of warm-up)", t.o.Phase)
	measureLegit(ctx, socket, time.Second)
	q1, qp := measureLegit(ctx, socket, t.o.Phase)

	t.progress("storm phase (%v): 1,700 attacking connections from another process", t.o.Phase)
	sc, err := t.env.GoServer(attackRole, Run{Socket: socket}, map[string]string{"silent": "1000", "partial": "500", "trickle": "100", "nonreading": "100"})
	if err != nil {
		return err
	}
	attackers, err := startServer(ctx, attackRole, sc, socket)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // the crowd gathers
	cpu0, acpu0, at0 := serverCPU(srv.pid()), serverCPU(attackers.pid()), time.Now()
	s1, sp := measureLegit(ctx, socket, t.o.Phase)
	cpu, acpu := serverCPU(srv.pid())-cpu0, serverCPU(attackers.pid())-acpu0
	wall := time.Since(at0)
	peak := rss(srv.pid())
	if err := attackers.stop(); err != nil {
		return err
	}

	for _, c := range []struct {
		name          string
		quiet, stormy *legit
	}{{"one-shot (engine.Send)", q1, s1}, {"persistent (engine.Client)", qp, sp}} {
		errs := c.quiet.errs.Load() + c.stormy.errs.Load()
		detail := ""
		if c.stormy.first != nil {
			detail = " (first: " + c.stormy.first.Error() + ")"
		} else if c.quiet.first != nil {
			detail = " (first: " + c.quiet.first.Error() + ")"
		}
		r.check(c.name+" errors", errs == 0, "0", "%d of %d%s", errs, errs+c.quiet.hist.TotalCount()+c.stormy.hist.TotalCount(), detail)
		qp99, sp99 := c.quiet.hist.ValueAtQuantile(99), c.stormy.hist.ValueAtQuantile(99)
		ratio := float64(sp99) / float64(max(qp99, 1))
		r.check(c.name+" p99 storm / quiet", c.stormy.hist.TotalCount() > 0 && ratio <= 3, "<= 3x",
			"%.2fx (%s / %s; p50 %s / %s, p90 %s / %s; %d requests in the storm)", ratio,
			FormatNS(float64(sp99)), FormatNS(float64(qp99)),
			FormatNS(float64(c.stormy.hist.ValueAtQuantile(50))), FormatNS(float64(c.quiet.hist.ValueAtQuantile(50))),
			FormatNS(float64(c.stormy.hist.ValueAtQuantile(90))), FormatNS(float64(c.quiet.hist.ValueAtQuantile(90))),
			c.stormy.hist.TotalCount())
	}
	r.info("server CPU during the storm", "%.1f%% of a core", 100*cpu.Seconds()/wall.Seconds())
	r.info("attacking process's CPU", "%.1f%% of a core", 100*acpu.Seconds()/wall.Seconds())
	r.info("server resident memory after the storm", "%s", mib(peak))
	return nil
}

// nonReading: the server's CPU while 300 connections wait for their peers
// to read replies they never read.
func (t *torture) nonReading(ctx context.Context, r *TortureReport) error {
	srv, socket, err := t.server(ctx, nil)
	if err != nil {
		return err
	}
	defer srv.stop()
	const conns = 300
	var held []*net.UnixConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
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
	r.check("server CPU", share < 0.02, "< 2% of a core", "%.2f%% of a core (%v in %v)", 100*share, cpu.Round(time.Millisecond), wait)
	// They are all still there: nothing was closed early.
	if c, err := engine.Send(ctx, socket, []byte("ping")); err != nil || string(c) != "pong" {
		r.check("a ping beside them", false, "answered", "%q, %v", c, err)
	}
	return nil
}

// memory: the server's resident memory while 1,024 connections send 15 MiB
// requests that never end, and ten seconds after they are gone.
func (t *torture) memory(ctx context.Context, r *TortureReport) error {
	const conns, each = 1024, 15 << 20
	settings := map[string]string{"budget": strconv.FormatInt(t.o.Budget, 10), "maxconns": "4096", "maxperuid": "4096", "firstbyte": "1m"}
	srv, socket, err := t.server(ctx, settings)
	if err != nil {
		return err
	}
	defer srv.stop()
	pid := srv.pid()
	cs := make([]*net.UnixConn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range conns {
		c, err := dialBacklog(ctx, socket)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	// Settle, and warm the server's buffers up with one large request, so
	// that the baseline is the server at work, not one that never was.
	if _, err := engine.Send(ctx, socket, make([]byte, 1<<20), engine.WithDialOptions(uds.WaitIfBusy())); err != nil {
		return err
	}
	time.Sleep(time.Second)
	base := rss(pid)
	t.progress("%d connections send %d MiB each, never ending it (budget %s, baseline %s)", conns, each>>20, mib(t.o.Budget), mib(base))

	var peak atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sleepCtx(sampleCtx, 20*time.Millisecond) {
			if m := rss(pid); m > peak.Load() {
				peak.Store(m)
			}
		}
	})
	chunk := frame.AppendData(nil, make([]byte, frame.MaxPacketSize-frame.HeaderSize))
	var sent atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range cs {
		wg.Go(func() {
			_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
			for n := 0; n < each; n += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return // closed for the budget
				}
				sent.Add(int64(len(chunk)))
			}
		})
	}
	wg.Wait()
	stormTime := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	during := peak.Load()
	stopSampling()
	sampler.Wait()
	for _, c := range cs {
		c.Close()
	}
	cs = cs[:0]
	t.progress("storm over in %v (%s sent); waiting 10 s", stormTime.Round(time.Millisecond), mib(sent.Load()))
	if !sleepCtx(ctx, 10*time.Second) {
		return ctx.Err()
	}
	after := rss(pid)
	r.check("peak resident memory", during <= t.o.Budget+base, "<= budget + baseline = "+mib(t.o.Budget+base),
		"%s (budget %s, baseline with %d idle connections %s)", mib(during), mib(t.o.Budget), conns, mib(base))
	r.check("resident memory 10 s after", after <= 2*base, "<= 2x baseline = "+mib(2*base), "%s", mib(after))
	r.info("bytes the attackers got in", "%s in %v", mib(sent.Load()), stormTime.Round(time.Millisecond))
	return nil
}

// idle: the server's resident memory with 10,000 idle connections, and a
// ping's latency beside them against the same ping alone.
func (t *torture) idle(ctx context.Context, r *TortureReport) error {
	const conns = 10_000
	srv, socket, err := t.server(ctx, map[string]string{"maxconns": "20000", "maxperuid": "20000", "firstbyte": "10m"})
	if err != nil {
		return err
	}
	defer srv.stop()
	alone := pingLatency(ctx, socket, 2000)
	before := rss(srv.pid())
	cs := make([]*net.UnixConn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range conns {
		c, err := dialBacklog(ctx, socket)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	time.Sleep(2 * time.Second)
	m := rss(srv.pid())
	beside := pingLatency(ctx, socket, 2000)
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

// pingLatency measures n pings on one persistent connection.
func pingLatency(ctx context.Context, socket string, n int) *Histogram {
	h := NewHistogram()
	c, err := dialWait(ctx, socket)
	if err != nil {
		return h
	}
	defer c.Close()
	for range n {
		start := time.Now()
		if _, err := c.Call([]byte("ping")); err != nil {
			return h
		}
		_ = h.RecordValue(clampNS(time.Since(start).Nanoseconds()))
	}
	return h
}

// pipelined: sixteen pipelined 4 MiB replies on one connection against one
// alone, from another process.
func (t *torture) pipelined(ctx context.Context, r *TortureReport) error {
	srv, socket, err := t.server(ctx, nil)
	if err != nil {
		return err
	}
	defer srv.stop()
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

// chaos: verified pipelined traffic while the server is killed or stopped
// at random and restarted. With Soak set it runs that long and samples the
// client's descriptors, goroutines and heap for a trend.
func (t *torture) chaos(ctx context.Context, r *TortureReport) error {
	run := t.o.Phase * 2
	if t.o.Soak > 0 {
		run = t.o.Soak
	}
	socket := t.env.TempPath("chaos")
	sc, err := t.env.GoServer(tortureRole, Run{Socket: socket}, nil)
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, tortureRole, sc, socket)
	if err != nil {
		return err
	}
	var srvMu sync.Mutex
	defer func() {
		srvMu.Lock()
		defer srvMu.Unlock()
		if srv != nil {
			srv.kill()
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, run)
	defer cancel()
	var kills, terms atomic.Int64
	var restartErr error
	var sup sync.WaitGroup
	sup.Go(func() {
		rng := rand.New(rand.NewPCG(7, 11))
		for sleepCtx(cctx, time.Duration(50+rng.IntN(250))*time.Millisecond) {
			srvMu.Lock()
			if rng.IntN(2) == 0 {
				srv.kill()
				kills.Add(1)
			} else {
				_ = srv.stop()
				terms.Add(1)
			}
			sc, err := t.env.GoServer(tortureRole, Run{Socket: socket}, nil)
			if err == nil {
				srv, err = startServer(ctx, tortureRole, sc, socket)
			}
			if err != nil {
				srv = nil
				restartErr = err
				srvMu.Unlock()
				cancel()
				return
			}
			srvMu.Unlock()
		}
	})
	t.progress("%v of restarts under 4 pipelining clients", run)
	var verified, failed, wrong, untyped atomic.Int64
	samples := newTrend()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() { chaosClient(cctx, socket, uint64(g), &verified, &failed, &wrong, &untyped) })
	}
	if t.o.Soak > 0 {
		wg.Go(func() {
			for sleepCtx(cctx, max(run/60, time.Second)) {
				samples.add()
			}
		})
	}
	wg.Wait()
	sup.Wait()
	if restartErr != nil {
		return restartErr
	}
	r.check("wrong replies returned as successes", wrong.Load() == 0, "0", "%d of %d verified", wrong.Load(), verified.Load())
	r.check("failures without a typed error", untyped.Load() == 0, "0", "%d of %d failures", untyped.Load(), failed.Load())
	r.info("restarts", "%d SIGKILL, %d SIGTERM in %v", kills.Load(), terms.Load(), run)
	r.info("requests", "%d verified, %d failed with ErrNotProcessed or ErrIncompleteReply", verified.Load(), failed.Load())
	if t.o.Soak > 0 {
		samples.report(r)
	}
	return nil
}

// chaosClient pipelines verified requests until ctx ends.
func chaosClient(ctx context.Context, socket string, id uint64, verified, failed, wrong, untyped *atomic.Int64) {
	rng := rand.New(rand.NewPCG(id, 3))
	var c *engine.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	type sent struct {
		seq  uint64
		size int
	}
	var req []byte
	var window []sent
	seq := id << 48
	for ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = dialWait(ctx, socket); err != nil {
				c = nil
				sleepCtx(ctx, 10*time.Millisecond)
				continue
			}
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		window = window[:0]
		for range 1 + rng.IntN(64) {
			size := rng.IntN(256)
			if rng.IntN(64) == 0 {
				size = rng.IntN(1 << 20)
			}
			seq++
			req = appendVerified(req[:0], seq, size)
			if err := c.Send(req); err != nil {
				failed.Add(1)
				if !errors.Is(err, engine.ErrNotProcessed) {
					untyped.Add(1)
				}
				continue
			}
			window = append(window, sent{seq, size})
		}
		for _, s := range window {
			reply, err := c.Recv()
			switch {
			case err != nil:
				failed.Add(1)
				if !errors.Is(err, engine.ErrIncompleteReply) {
					untyped.Add(1)
				}
			case verifyReply(reply, s.seq, s.size):
				verified.Add(1)
			default:
				wrong.Add(1)
			}
		}
	}
}

// trend samples this process's descriptors, goroutines and heap during a
// soak, and reports the change per hour over the second half of it.
type trend struct {
	start             time.Time
	at, fds, gs, heap []float64
}

func newTrend() *trend { return &trend{start: time.Now()} }

func (tr *trend) add() {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	tr.at = append(tr.at, time.Since(tr.start).Hours())
	fds := -1
	if m, err := perf.PidMemory(os.Getpid()); err == nil {
		fds = m.FDs
	}
	tr.fds = append(tr.fds, float64(fds))
	tr.gs = append(tr.gs, float64(runtime.NumGoroutine()))
	tr.heap = append(tr.heap, float64(ms.HeapAlloc))
}

// report compares the last quarter of the run with the second: a leak
// grows between them, while reconnections and collections only make the
// counts wobble. The least-squares slope over the second half is shown
// too; only a long soak makes it meaningful per hour.
func (tr *trend) report(r *TortureReport) {
	n := len(tr.at)
	if n < 8 {
		r.info("trend", "too few samples (%d)", n)
		return
	}
	for _, s := range []struct {
		name  string
		v     []float64
		slack float64 // wobble allowed on top of the earlier level
	}{{"client descriptors", tr.fds, 2}, {"client goroutines", tr.gs, 2}, {"client live heap (bytes)", tr.heap, 1 << 20}} {
		early, late := slices.Max(s.v[n/4:n/2]), slices.Max(s.v[3*n/4:])
		limit := early + s.slack
		if s.name == "client live heap (bytes)" {
			limit = 1.25*early + s.slack
		}
		r.check(s.name+", last quarter vs second", late <= limit, "no growth",
			"%.0f vs %.0f (slope %+.3g per hour over the second half, %d samples)", late, early, slope(tr.at[n/2:], s.v[n/2:]), n)
	}
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	var sx, sy, sxx, sxy float64
	n := float64(len(x))
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
