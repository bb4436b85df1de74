package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"
)

// Option configures a Runner.
type Option func(*options) error

type options struct {
	tempDir  string
	logger   *slog.Logger
	progress func(Progress)
	counters bool
}

// WithTempDir sets the directory in which the runner creates its private
// directory (default: os.TempDir). Keep it short: socket paths must fit in
// 108 bytes.
func WithTempDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return fmt.Errorf("%w: empty temp dir", ErrUsage)
		}
		o.tempDir = dir
		return nil
	}
}

// WithLogger sets the logger for diagnostics (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrUsage)
		}
		o.logger = l
		return nil
	}
}

// WithProgress sets a function called from the runner's goroutine before
// and after each run.
func WithProgress(f func(Progress)) Option {
	return func(o *options) error {
		o.progress = f
		return nil
	}
}

// WithCounters turns perf counters on or off (default on; they degrade to
// "n/a" where the kernel refuses them).
func WithCounters(on bool) Option {
	return func(o *options) error {
		o.counters = on
		return nil
	}
}

// Runner executes plans. A Runner may run one plan at a time; create one per
// concurrent use.
type Runner struct {
	o options
}

// NewRunner validates the options and returns a Runner.
func NewRunner(opts ...Option) (*Runner, error) {
	r := &Runner{o: options{tempDir: os.TempDir(), counters: true}}
	for _, opt := range opts {
		if err := opt(&r.o); err != nil {
			return nil, err
		}
	}
	if r.o.logger == nil {
		r.o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return r, nil
}

// Progress reports one step of Runner.Run.
type Progress struct {
	Index int // 1-based position of the run in the plan
	Total int // runs in the plan
	Run   Run
	Done  bool    // false when the run starts, true when it ended
	Rec   *Record // the result, when done and successful
	Err   error   // why the run failed or was skipped, when done
	// Remaining estimates the time left for the runs after this one.
	Remaining time.Duration
}

// PeerStatus says which peers took part.
type PeerStatus struct {
	Name        string `json:"name"`
	Doc         string `json:"doc"`
	Unavailable string `json:"unavailable,omitempty"`
}

// Failure is a run that did not produce a record.
type Failure struct {
	Case
	Peer  string `json:"peer"`
	Error string `json:"error"`
}

// Results are the records of one plan.
type Results struct {
	Command    string       `json:"command,omitempty"`
	Suite      string       `json:"suite"`
	Machine    Machine      `json:"machine"`
	Started    time.Time    `json:"started"`
	WallNS     int64        `json:"wall_ns"`
	DurationNS int64        `json:"duration_ns"`
	WarmupNS   int64        `json:"warmup_ns"`
	Rounds     int          `json:"rounds,omitempty"` // runs of each case and peer (Selection.Rounds); 0: one
	Peers      []PeerStatus `json:"peers"`
	Cases      []Case       `json:"cases"`
	Records    []Record     `json:"records"`
	Failures   []Failure    `json:"failures,omitempty"`
}

// Find returns the record of peer for case c, or nil. Like every method of
// Results, it only reads and is safe for concurrent use by readers.
func (res *Results) Find(c Case, peer string) *Record {
	for i := range res.Records {
		if res.Records[i].Case == c && res.Records[i].Peer == peer {
			return &res.Records[i]
		}
	}
	return nil
}

// fileOverhead is the descriptors a run needs beyond its connections: the
// runtime, pipes to children, counters, a margin.
const fileOverhead = 256

// perRunOverhead estimates a run's cost beyond warm-up and window (server
// start-up and stop) for the progress ETA.
const perRunOverhead = 60 * time.Millisecond

// Run executes every run of plan in order and returns the results. With
// several rounds, each peer of a case keeps one record: the run of the
// median headline (keepMedians). A run
// that fails is recorded in Results.Failures and the plan goes on; peers
// that are unavailable are listed with the reason. When ctx is cancelled,
// Run stops the current run's processes, removes its directory and returns
// the results so far with ctx's error. Call it from one goroutine at a
// time; WithProgress's function is called on that goroutine.
func (r *Runner) Run(ctx context.Context, plan *Plan) (*Results, error) {
	start := time.Now()
	res := &Results{
		Suite: plan.Suite, Machine: DescribeMachine(), Started: start.UTC(),
		DurationNS: int64(plan.Duration), WarmupNS: int64(plan.Warmup), Cases: plan.Cases,
	}
	if plan.Rounds > 1 {
		res.Rounds = plan.Rounds
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: cannot re-execute this binary for server children: %w", err)
	}
	dir, err := os.MkdirTemp(r.o.tempDir, "pk")
	if err != nil {
		return nil, fmt.Errorf("bench: private directory: %w", err)
	}
	defer os.RemoveAll(dir)
	env := &Env{Dir: dir, TestTool: plan.TestTool, Logger: r.o.logger, exe: exe}
	peers, unavailable, err := prepare(ctx, env, plan, res)
	if err != nil {
		if ctx.Err() != nil {
			return res, err
		}
		return nil, err
	}

	per := plan.Warmup + plan.Duration + perRunOverhead
	for i, run := range plan.Runs {
		ev := Progress{Index: i + 1, Total: len(plan.Runs), Run: run, Remaining: time.Duration(len(plan.Runs)-i) * per}
		r.report(ev)
		ev.Done = true
		ev.Remaining -= per
		p, ok := peers[run.Peer]
		if !ok {
			ev.Err = unavailable[run.Peer]
			r.report(ev)
			continue
		}
		rec, err := r.runOne(ctx, env, p, run)
		if ctx.Err() != nil {
			res.WallNS = int64(time.Since(start))
			keepMedians(res)
			computeRatios(res) // for the cases that finished
			return res, ctx.Err()
		}
		if err != nil {
			res.Failures = append(res.Failures, Failure{Case: run.Case, Peer: run.Peer, Error: err.Error()})
			ev.Err = err
		} else {
			res.Records = append(res.Records, rec)
			ev.Rec = &res.Records[len(res.Records)-1]
		}
		r.report(ev)
	}
	keepMedians(res)
	computeRatios(res)
	res.WallNS = int64(time.Since(start))
	return res, nil
}

// keepMedians leaves one record for each case and peer that ran in
// several rounds: the run whose headline (Record.Headline) is the median,
// of an even number the lower of the two in the middle, with every
// round's headline noted in it, in the order the rounds ran. Records keep
// the order of their first rounds.
func keepMedians(res *Results) {
	type key struct {
		c    Case
		peer string
	}
	rounds := make(map[key][]int)
	var order []key
	for i := range res.Records {
		k := key{res.Records[i].Case, res.Records[i].Peer}
		if _, ok := rounds[k]; !ok {
			order = append(order, k)
		}
		rounds[k] = append(rounds[k], i)
	}
	if len(order) == len(res.Records) {
		return
	}
	kept := make([]Record, 0, len(order))
	for _, k := range order {
		runs := rounds[k]
		heads := make([]float64, len(runs))
		for j, i := range runs {
			heads[j] = res.Records[i].Headline()
		}
		byHead := slices.Clone(runs)
		slices.SortStableFunc(byHead, func(a, b int) int {
			return cmp.Compare(res.Records[a].Headline(), res.Records[b].Headline())
		})
		rec := res.Records[byHead[(len(byHead)-1)/2]]
		if len(runs) > 1 {
			rec.RoundHeadlines = heads
		}
		kept = append(kept, rec)
	}
	res.Records = kept
}

// prepare readies the peers of plan and lists them in res.Peers: it
// returns those that can run, and why the others cannot.
func prepare(ctx context.Context, env *Env, plan *Plan, res *Results) (map[string]Peer, map[string]error, error) {
	peers := make(map[string]Peer)
	unavailable := make(map[string]error)
	for _, name := range plan.Peers {
		info, ok := Lookup(name)
		if !ok {
			return nil, nil, usageErrorf("unknown peer %q", name)
		}
		st := PeerStatus{Name: name, Doc: info.Doc}
		p := info.New()
		if err := p.Prepare(ctx, env); err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			var te *TestToolError
			if errors.As(err, &te) {
				return nil, nil, err
			}
			unavailable[name] = err
			st.Unavailable = err.Error()
		} else {
			peers[name] = p
		}
		res.Peers = append(res.Peers, st)
	}
	return peers, unavailable, nil
}

func (r *Runner) report(p Progress) {
	if r.o.progress != nil {
		r.o.progress(p)
	}
}

func (r *Runner) runOne(ctx context.Context, env *Env, p Peer, run Run) (Record, error) {
	if err := ensureFiles(uint64(2*run.Conns + fileOverhead)); err != nil {
		return Record{}, err
	}
	run.Socket = env.TempPath("s")
	defer os.Remove(run.Socket)
	sc, err := p.Server(env, run)
	if err != nil {
		return Record{}, err
	}
	srv, err := startServer(ctx, run.Peer, sc, run.Socket)
	if err != nil {
		return Record{}, err
	}
	m := newMeter(srv.pid(), r.o.counters)
	defer m.close()
	load, cerr := p.Client(ctx, env, run, m)
	serr := srv.stop()
	if ctx.Err() != nil {
		return Record{}, ctx.Err()
	}
	if cerr != nil {
		return Record{}, errors.Join(cerr, serr)
	}
	if serr != nil {
		return Record{}, serr
	}
	return buildRecord(run, load, m)
}

// computeRatios sets XUnix and XC on every record whose case has the
// baseline's record.
func computeRatios(res *Results) {
	for i := range res.Records {
		rec := &res.Records[i]
		if base := res.Find(rec.Case, BaselineUnix); base != nil {
			rec.XUnix = rec.ratioTo(base)
		}
		if base := res.Find(rec.Case, BaselineC); base != nil {
			rec.XC = rec.ratioTo(base)
		}
	}
}

// PeersWithRecords returns the peers that have at least one record, in
// table order. Any goroutine may call it.
func (res *Results) PeersWithRecords() []string {
	var out []string
	for _, rec := range res.Records {
		if !slices.Contains(out, rec.Peer) {
			out = append(out, rec.Peer)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return peerOrder(a) - peerOrder(b) })
	return out
}
