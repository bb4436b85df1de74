package bench

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/perf"
)

// chaos: verified pipelined traffic while the server is killed or stopped
// at random and restarted. With Soak set it runs that long and samples the
// client's descriptors, goroutines and heap for a trend.
func (t *torture) chaos(ctx context.Context, r *TortureReport) error {
	run := t.o.Phase * 2
	if t.o.Soak > 0 {
		run = t.o.Soak
	}
	socket := t.env.TempPath("chaos")
	srv, err := t.start(ctx, socket, tortureSettings{})
	if err != nil {
		return err
	}
	rs := &restarter{t: t, socket: socket, srv: srv}
	defer rs.kill()
	cctx, cancel := context.WithTimeout(ctx, run)
	defer cancel()
	var sup sync.WaitGroup
	sup.Go(func() { rs.loop(ctx, cctx, cancel) })
	t.progress("%v of restarts under 4 pipelining clients", run)
	var tally chaosTally
	samples := newTrend()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() { chaosClient(cctx, socket, uint64(g), &tally) })
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
	if rs.err != nil {
		return rs.err
	}
	rs.mu.Lock()
	if !rs.srv.alive() {
		rs.crashes++
	}
	rs.mu.Unlock()
	verified, failed := tally.verified.Load(), tally.failed.Load()
	r.check("wrong replies returned as successes", tally.wrong.Load() == 0, "0", "%d of %d verified", tally.wrong.Load(), verified)
	r.check("failures without a typed error", tally.untyped.Load() == 0, "0", "%d of %d failures", tally.untyped.Load(), failed)
	// A server that failed every request, typed, or that no client could
	// reach, would pass the two rows above with nothing verified.
	r.check("requests served", verified > 0 && verified >= failed, "verified >= failed, > 0",
		"%d verified, %d failed with ErrNotProcessed or ErrIncompleteReply", verified, failed)
	r.check("servers that exited on their own", rs.crashes == 0, "0", "%d of %d", rs.crashes, rs.kills+rs.terms+1)
	r.info("restarts", "%d SIGKILL, %d SIGTERM in %v", rs.kills, rs.terms, run)
	r.info("failed dials", "%d (the server restarting)", tally.dialFailed.Load())
	if t.o.Soak > 0 {
		samples.report(r)
	}
	return nil
}

// restarter kills or stops the chaos server at random and starts it again
// on the same socket.
type restarter struct {
	t      *torture
	socket string

	mu  sync.Mutex
	srv *serverProc // nil once a restart failed

	// Written by loop, read after it returned.
	kills, terms int64
	crashes      int64 // servers found exited before their kill or stop
	err          error // why a restart failed
}

// loop restarts the server every 50 to 300 ms until cctx ends; a failed
// restart ends it early with cancel. ctx bounds the servers it starts.
func (rs *restarter) loop(ctx, cctx context.Context, cancel context.CancelFunc) {
	rng := rand.New(rand.NewPCG(7, 11))
	for sleepCtx(cctx, time.Duration(50+rng.IntN(250))*time.Millisecond) {
		rs.mu.Lock()
		if !rs.srv.alive() {
			rs.crashes++
		}
		if rng.IntN(2) == 0 {
			rs.srv.kill()
			rs.kills++
		} else {
			_ = rs.srv.stop()
			rs.terms++
		}
		rs.srv, rs.err = rs.t.start(ctx, rs.socket, tortureSettings{})
		rs.mu.Unlock()
		if rs.err != nil {
			cancel()
			return
		}
	}
}

// kill ends the server that runs now, if any.
func (rs *restarter) kill() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.srv != nil {
		rs.srv.kill()
	}
}

// chaosTally counts the chaos clients' requests; any goroutine.
type chaosTally struct {
	verified, failed, wrong, untyped, dialFailed atomic.Int64
}

// chaosSent is a request in flight: what its reply must match.
type chaosSent struct {
	seq  uint64
	size int
}

// chaosClient pipelines verified requests until ctx ends.
func chaosClient(ctx context.Context, socket string, id uint64, tally *chaosTally) {
	rng := rand.New(rand.NewPCG(id, 3))
	var c *engine.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	var req []byte
	var window []chaosSent
	seq := id << 48
	for ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = dialWait(ctx, socket); err != nil {
				c = nil
				if ctx.Err() == nil {
					tally.dialFailed.Add(1)
				}
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
				tally.failure(err, engine.ErrNotProcessed)
				continue
			}
			window = append(window, chaosSent{seq, size})
		}
		tally.receive(c, window)
	}
}

// receive reads the replies of window and checks each against its request.
func (tally *chaosTally) receive(c *engine.Client, window []chaosSent) {
	for _, s := range window {
		reply, err := c.Recv()
		switch {
		case err != nil:
			tally.failure(err, engine.ErrIncompleteReply)
		case verifyReply(reply, s.seq, s.size):
			tally.verified.Add(1)
		default:
			tally.wrong.Add(1)
		}
	}
}

// failure counts a failed request, and an untyped failure when err is not
// the typed error the engine promises for it.
func (tally *chaosTally) failure(err, typed error) {
	tally.failed.Add(1)
	if !errors.Is(err, typed) {
		tally.untyped.Add(1)
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
