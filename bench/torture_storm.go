package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/engine"
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

// legitCallBound bounds one legitimate call: past it, the call fails, and
// counts as an error. A call runs to its end even if the phase ends
// first, so that a server that stalls its clients shows.
const legitCallBound = 10 * time.Second

// run calls until phase ends; ctx bounds the calls themselves, and the
// last one may outlive phase by up to legitCallBound.
func (l *legit) run(ctx, phase context.Context, socket string) {
	var c *engine.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for phase.Err() == nil {
		start := time.Now()
		var err error
		var reply []byte
		if l.oneShot {
			rctx, cancel := context.WithTimeout(ctx, legitCallBound)
			reply, err = engine.Send(rctx, socket, []byte("ping"))
			cancel()
		} else {
			if c == nil {
				dctx, cancel := context.WithTimeout(ctx, legitCallBound)
				if c, err = dialWait(dctx, socket); err != nil {
					c = nil
				}
				cancel()
			}
			if c != nil {
				_ = c.SetDeadline(start.Add(legitCallBound))
				reply, err = c.Call([]byte("ping"))
			}
		}
		if ctx.Err() != nil {
			return // the whole run was cancelled: no fault of the server's
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
		if err != nil && c != nil {
			c.Close() // a failed call may leave the connection mid-reply
			c = nil
		}
		time.Sleep(time.Millisecond)
	}
}

// measureLegit runs a one-shot and a persistent client for d (each one's
// last call may take longer: legit.run) and returns them.
func measureLegit(ctx context.Context, socket string, d time.Duration) (oneShot, persistent *legit) {
	oneShot = &legit{oneShot: true, hist: NewHistogram()}
	persistent = &legit{hist: NewHistogram()}
	phase, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range []*legit{oneShot, persistent} {
		wg.Go(func() { l.run(ctx, phase, socket) })
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

// attackSettings are how many connections of each kind the attack role
// holds.
type attackSettings struct {
	Silent     int `json:"silent"`
	Partial    int `json:"partial"`
	Trickle    int `json:"trickle"`
	NonReading int `json:"nonreading"`
}

// serveAttack is not a server: it is the storm's crowd, in a process of its
// own, as an attacker would be. Each of its connections reconnects when the
// server closes it. It is ready once every connection was opened once.
func serveAttack(ctx context.Context, cfg serverConfig, settings attackSettings, ready func()) error {
	var wg sync.WaitGroup
	var opened atomic.Int64
	counts := [...]int{attackSilent: settings.Silent, attackPartial: settings.Partial,
		attackTrickle: settings.Trickle, attackNonReading: settings.NonReading}
	total := 0
	for kind, n := range counts {
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
	srv, socket, err := t.server(ctx, tortureSettings{})
	if err != nil {
		return err
	}
	defer t.stopServer(r, srv)
	t.progress("quiet phase (%v, after a second of warm-up)", t.o.Phase)
	measureLegit(ctx, socket, time.Second)
	q1, qp := measureLegit(ctx, socket, t.o.Phase)

	t.progress("storm phase (%v): 1,700 attacking connections from another process", t.o.Phase)
	crowd := attackSettings{Silent: 1000, Partial: 500, Trickle: 100, NonReading: 100}
	sc, err := attackRole.command(t.env, Run{Socket: socket}, crowd)
	if err != nil {
		return err
	}
	attackers, err := startServer(ctx, string(attackRole), sc, socket)
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
	reportLegit(r, "one-shot (engine.Send)", q1, s1)
	reportLegit(r, "persistent (engine.Client)", qp, sp)
	r.info("server CPU during the storm", "%.1f%% of a core", 100*cpu.Seconds()/wall.Seconds())
	r.info("attacking process's CPU", "%.1f%% of a core", 100*acpu.Seconds()/wall.Seconds())
	r.info("server resident memory at the storm's end, attackers connected", "%s", mib(peak))
	return nil
}

// reportLegit checks a legitimate client's errors, and its p99 in the storm
// against its p99 in the quiet.
func reportLegit(r *TortureReport, name string, quiet, stormy *legit) {
	errs := quiet.errs.Load() + stormy.errs.Load()
	detail := ""
	if stormy.first != nil {
		detail = " (first: " + stormy.first.Error() + ")"
	} else if quiet.first != nil {
		detail = " (first: " + quiet.first.Error() + ")"
	}
	r.check(name+" errors", errs == 0, "0", "%d of %d%s", errs, errs+quiet.hist.TotalCount()+stormy.hist.TotalCount(), detail)
	qp99, sp99 := quiet.hist.ValueAtQuantile(99), stormy.hist.ValueAtQuantile(99)
	ratio := float64(sp99) / float64(max(qp99, 1))
	r.check(name+" p99 storm / quiet", stormy.hist.TotalCount() > 0 && ratio <= 3, "<= 3x",
		"%.2fx (%s / %s; p50 %s / %s, p90 %s / %s; %d requests in the storm)", ratio,
		FormatNS(float64(sp99)), FormatNS(float64(qp99)),
		FormatNS(float64(stormy.hist.ValueAtQuantile(50))), FormatNS(float64(quiet.hist.ValueAtQuantile(50))),
		FormatNS(float64(stormy.hist.ValueAtQuantile(90))), FormatNS(float64(quiet.hist.ValueAtQuantile(90))),
		stormy.hist.TotalCount())
}
