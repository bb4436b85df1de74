package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/perf"
	"github.com/pktipc/pktipc/uds"
)

// Torture runs pktipc's server in a child process and abuses it from this
// one, as a hostile or unlucky user would: a storm of silent, partial,
// trickling and non-reading connections while legitimate clients measure;
// connections that never read their replies; a crowd of unterminated
// large requests; ten thousand idle connections; large pipelined replies;
// restarts and kills under pipelined, verified traffic. Each scenario
// reports measurements beside the targets they must meet.

// TortureScenarios names the scenarios in the order they run. Any
// goroutine may call it.
func TortureScenarios() []string {
	names := make([]string, len(tortureScenarios))
	for i, sc := range tortureScenarios {
		names[i] = sc.name
	}
	return names
}

// TortureOptions select and size a torture run.
type TortureOptions struct {
	Scenarios []string      // from TortureScenarios(); empty: all
	Phase     time.Duration // each measured phase; default 5 s
	Soak      time.Duration // run chaos this long instead, sampling trends; 0: off
	Budget    int64         // the memory scenario's budget; default engine.DefaultMemoryBudget
	Progress  io.Writer     // progress lines; nil: none
}

// TortureRow is one measurement, with the target it is held to, if any.
type TortureRow struct {
	Name   string
	Value  string
	Target string // "" when the row is informational
	OK     bool
}

// TortureReport is what one scenario measured.
type TortureReport struct {
	Scenario string
	Doc      string
	Rows     []TortureRow
	Err      error // the scenario could not run
}

// Pass reports whether the scenario ran and met every target. Any goroutine
// may call it once Torture returned.
func (r *TortureReport) Pass() bool {
	if r.Err != nil {
		return false
	}
	for _, row := range r.Rows {
		if row.Target != "" && !row.OK {
			return false
		}
	}
	return true
}

func (r *TortureReport) info(name, format string, args ...any) {
	r.Rows = append(r.Rows, TortureRow{Name: name, Value: fmt.Sprintf(format, args...)})
}

func (r *TortureReport) check(name string, ok bool, target, format string, args ...any) {
	r.Rows = append(r.Rows, TortureRow{Name: name, Value: fmt.Sprintf(format, args...), Target: target, OK: ok})
}

// Torture runs the scenarios and returns their reports, in order. It stops
// early, with ctx's error, when ctx ends. Any goroutine may call it; one
// Torture at a time per process, as the scenarios measure the machine.
func Torture(ctx context.Context, o TortureOptions) ([]*TortureReport, error) {
	names := o.Scenarios
	if len(names) == 0 {
		names = TortureScenarios()
	}
	for _, n := range names {
		if !slices.Contains(TortureScenarios(), n) {
			return nil, usageErrorf("unknown torture scenario %q (have %s)", n, strings.Join(TortureScenarios(), ", "))
		}
	}
	if o.Phase <= 0 {
		o.Phase = 5 * time.Second
	}
	if o.Budget <= 0 {
		o.Budget = engine.DefaultMemoryBudget
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pkt")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Clients and servers of the scenarios hold up to about 10,000
	// descriptors each.
	if err := ensureFiles(12_000); err != nil {
		return nil, err
	}
	t := &torture{o: o, env: &Env{Dir: dir, exe: exe}}
	var reports []*TortureReport
	for _, sc := range tortureScenarios {
		if !slices.Contains(names, sc.name) {
			continue
		}
		fmt.Fprintf(o.Progress, "torture: %s\n", sc.name)
		r := &TortureReport{Scenario: sc.name, Doc: sc.doc}
		r.Err = sc.run(t, ctx, r)
		reports = append(reports, r)
		if ctx.Err() != nil {
			return reports, ctx.Err()
		}
	}
	return reports, nil
}

// tortureScenarios are the scenarios, in the order they run.
var tortureScenarios = []struct {
	name, doc string
	run       func(*torture, context.Context, *TortureReport) error
}{
	{"storm", "1,000 silent, 500 partial, 100 trickling and 100 non-reading connections of the clients' own uid, reconnecting when closed, while a one-shot (engine.Send) and a persistent (engine.Client) client ping", (*torture).storm},
	{"nonreading", "300 connections that ask for git's 810 KB \"big\" reply and never read it: the server's CPU while they wait", (*torture).nonReading},
	{"memory", "1,024 connections that each send a 15 MiB request and never end it: the server's resident memory during and after", (*torture).memory},
	{"idle", "10,000 idle connections (caps raised): what they add to the server's resident memory, and a ping's latency beside them", (*torture).idle},
	{"pipelined", "sixteen pipelined 4 MiB replies on one connection against one alone", (*torture).pipelined},
	{"chaos", "pipelined, verified requests (windows of 1-64, replies up to 1 MiB) while the server is killed (SIGKILL) or stopped (SIGTERM) at random and restarted", (*torture).chaos},
}

// torture is one run's shared state.
type torture struct {
	o   TortureOptions
	env *Env
}

// server starts the torture server role with settings on a fresh socket.
func (t *torture) server(ctx context.Context, settings tortureSettings) (*serverProc, string, error) {
	socket := t.env.TempPath("t")
	p, err := t.start(ctx, socket, settings)
	return p, socket, err
}

// start starts the torture server role with settings on socket.
func (t *torture) start(ctx context.Context, socket string, settings tortureSettings) (*serverProc, error) {
	sc, err := tortureRole.command(t.env, Run{Socket: socket}, settings)
	if err != nil {
		return nil, err
	}
	return startServer(ctx, string(tortureRole), sc, socket)
}

func (t *torture) progress(format string, args ...any) {
	fmt.Fprintf(t.o.Progress, "torture:   "+format+"\n", args...)
}

// stopServer stops srv at the end of a scenario, with a failed row if it
// had exited before (a crash, or the kernel's OOM killer): a scenario
// whose server died must not pass on what it measured before.
func (t *torture) stopServer(r *TortureReport, srv *serverProc) {
	err := srv.stop()
	value := "yes"
	if err != nil {
		value = err.Error()
	}
	r.check("server ran to the end", err == nil, "yes", "%s", value)
}

// answers adds a row that fails unless a ping on socket gets its pong.
func (t *torture) answers(ctx context.Context, r *TortureReport, name, socket string) {
	pctx, cancel := context.WithTimeout(ctx, legitCallBound)
	defer cancel()
	got, err := engine.Send(pctx, socket, []byte("ping"))
	r.check(name, err == nil && string(got) == "pong", "pong", "%.20q, %v", got, err)
}

// serverCPU returns the CPU time of process pid so far.
func serverCPU(pid int) time.Duration {
	d, err := perf.PidCPUClock(pid)
	if err != nil {
		if c, err := perf.PidCPU(pid); err == nil {
			return c.Total()
		}
	}
	return d
}

// rss returns the resident memory of pid, or -1.
func rss(pid int) int64 {
	m, err := perf.PidMemory(pid)
	if err != nil {
		return -1
	}
	return m.RSS
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// dialWait connects as git's client does when asked to wait: retrying a
// busy or missing server for up to a second.
func dialWait(ctx context.Context, socket string) (*engine.Client, error) {
	return engine.Dial(ctx, socket, engine.WithDialOptions(uds.WaitIfBusy(), uds.WaitIfNotFound()))
}

// sleepCtx sleeps d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
