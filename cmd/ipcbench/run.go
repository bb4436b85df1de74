package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pktipc/pktipc/bench"
	"github.com/pktipc/pktipc/bench/plot"
)

// Environment overrides of the suite's timings, for tests and for slow or
// fast machines; flags win over them.
const (
	durationEnv = "IPCBENCH_DURATION"
	warmupEnv   = "IPCBENCH_WARMUP"
)

func init() {
	register(command{name: "run", summary: "run a suite or a selection and print a table (default command)", run: runCommand})
}

// selectionFlags are the flags shared by run and report.
type selectionFlags struct {
	suite, scenarios, peers, sizes, conns string
	duration, warmup                      time.Duration
	testTool, tmpDir                      string
	counters                              bool
	rounds                                int
}

func (s *selectionFlags) add(fs *flag.FlagSet, suiteFlag bool) {
	if suiteFlag {
		fs.StringVar(&s.suite, "suite", "quick", "suite: quick or full")
	}
	fs.StringVar(&s.scenarios, "scenario", "", "comma-separated scenarios: "+kindList())
	fs.StringVar(&s.peers, "peer", "", "comma-separated peers: "+strings.Join(bench.PeerNames(), ", "))
	fs.StringVar(&s.sizes, "size", "", "comma-separated message sizes, e.g. 64,4K,1MiB (replaces the suite's)")
	fs.StringVar(&s.conns, "conns", "", "comma-separated concurrent client counts (replaces the suite's)")
	fs.DurationVar(&s.duration, "duration", 0, "measured time per run (default: the suite's; env "+durationEnv+")")
	fs.DurationVar(&s.warmup, "warmup", 0, "warm-up per run, not counted (default: the suite's; env "+warmupEnv+")")
	fs.StringVar(&s.testTool, "test-tool", "", "path of git's t/helper/test-tool, to run git's simple-ipc as a peer")
	fs.StringVar(&s.tmpDir, "tmpdir", os.TempDir(), "where to create the private socket directory (keep it short)")
	fs.BoolVar(&s.counters, "counters", true, "read perf counters (n/a where the kernel refuses)")
	fs.IntVar(&s.rounds, "rounds", 1, fmt.Sprintf("runs of each case (1-%d), its peers taking turns in each round; a table keeps each peer's median run", bench.MaxRounds))
}

func kindList() string {
	var s []string
	for _, k := range bench.Kinds {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// selection validates the flags into a bench.Selection. Its errors are
// usage errors.
func (s *selectionFlags) selection() (bench.Selection, error) {
	sel := bench.Selection{Suite: s.suite, Duration: s.duration, Warmup: s.warmup, TestTool: s.testTool, Rounds: s.rounds}
	var err error
	if sel.Duration == 0 {
		if sel.Duration, err = envDuration(durationEnv); err != nil {
			return sel, err
		}
	}
	if sel.Warmup == 0 {
		if sel.Warmup, err = envDuration(warmupEnv); err != nil {
			return sel, err
		}
	}
	if s.scenarios != "" {
		if sel.Scenarios, err = bench.ParseKinds(s.scenarios); err != nil {
			return sel, err
		}
	}
	sel.Peers = bench.SplitList(s.peers)
	if s.sizes != "" {
		if sel.Sizes, err = bench.ParseSizes(s.sizes); err != nil {
			return sel, err
		}
	}
	if s.conns != "" {
		if sel.Conns, err = bench.ParseInts(s.conns); err != nil {
			return sel, err
		}
	}
	if s.testTool != "" {
		if err := bench.CheckTestTool(s.testTool); err != nil {
			return sel, err
		}
	}
	return sel, nil
}

func envDuration(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: %s=%q is not a positive duration", bench.ErrUsage, name, v)
	}
	return d, nil
}

// newFlagSet returns a FlagSet that reports errors to stderr and returns
// them instead of exiting.
func newFlagSet(name, synopsis string, cio *cmdIO) *flag.FlagSet {
	fs := flag.NewFlagSet("ipcbench "+name, flag.ContinueOnError)
	fs.SetOutput(cio.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ipcbench %s\n\nFlags (--name=value or --name value):\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns an exit status when the command should
// stop (help asked: 0; bad flag: 2).
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return exitUsage, true
	}
	return 0, false
}

// execute plans and runs a selection with progress on stderr. It returns
// the results (possibly partial) and an exit status when it failed.
func execute(ctx context.Context, cio *cmdIO, name string, sf *selectionFlags, sel bench.Selection) (*bench.Results, int) {
	plan, err := sel.Plan()
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench %s: %v\n", name, err)
		return nil, exitUsage
	}
	estimate := time.Duration(len(plan.Runs)) * (plan.Duration + plan.Warmup + 100*time.Millisecond)
	prog := newProgress(cio, len(plan.Runs), estimate)
	runner, err := bench.NewRunner(bench.WithProgress(prog.event), bench.WithTempDir(sf.tmpDir), bench.WithCounters(sf.counters))
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench %s: %v\n", name, err)
		return nil, exitUsage
	}
	res, err := runner.Run(ctx, plan)
	prog.finish()
	switch {
	case ctx.Err() != nil:
		fmt.Fprintf(cio.stderr, "ipcbench %s: interrupted; servers stopped and sockets removed\n", name)
		return res, exitInterrupted
	case errors.Is(err, bench.ErrUsage):
		fmt.Fprintf(cio.stderr, "ipcbench %s: %v\n", name, err)
		return nil, exitUsage
	case err != nil:
		fmt.Fprintf(cio.stderr, "ipcbench %s: %v\n", name, err)
		return res, exitFail
	}
	return res, exitOK
}

func runCommand(ctx context.Context, cio *cmdIO, args []string) int {
	fs := newFlagSet("run", "[run] [flags]", cio)
	var sf selectionFlags
	sf.add(fs, true)
	jsonOut := fs.Bool("json", false, "write the results as JSON on stdout instead of tables")
	plotDir := fs.String("plot", "", "write SVG charts (latency CDFs, throughput against clients) into this directory")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	sel, err := sf.selection()
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench run: %v\n", err)
		return exitUsage
	}
	res, code := execute(ctx, cio, "run", &sf, sel)
	if res == nil {
		return code
	}
	res.Command = "ipcbench " + strings.Join(append([]string{"run"}, args...), " ")
	if err := output(cio.stdout, res, *jsonOut); err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench run: %v\n", err)
		return exitFail
	}
	if *plotDir != "" && code == exitOK {
		charts, err := plot.WriteAll(*plotDir, *plotDir, res)
		if err != nil {
			fmt.Fprintf(cio.stderr, "ipcbench run: plots: %v\n", err)
			return exitFail
		}
		for _, c := range charts {
			fmt.Fprintf(cio.stderr, "wrote %s\n", filepath.Join(*plotDir, c.Path))
		}
	}
	if code == exitOK && len(res.Failures) > 0 {
		code = exitFail
	}
	return code
}

func output(w io.Writer, res *bench.Results, asJSON bool) error {
	if asJSON {
		return bench.WriteJSON(w, res)
	}
	m := res.Machine
	if len(res.Records) == 0 && len(res.Failures) == 0 {
		return nil
	}
	fmt.Fprintf(w, "pktipc %s suite: %s, %d cores, %s, %s; %v per run\n\n", res.Suite, m.CPU, m.Cores, m.Kernel, m.GoVersion,
		time.Duration(res.DurationNS))
	// What each peer is, so that the tables read without BENCHMARKS.md.
	if err := bench.WritePeers(w, res); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return bench.WriteTables(w, res, "###")
}
