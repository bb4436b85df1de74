package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pktipc/pktipc/bench"
	"github.com/pktipc/pktipc/engine"
)

func init() {
	register(command{name: "torture", summary: "abuse a pktipc server from outside and check it against its targets", run: tortureCommand})
}

// tortureCommand runs bench.Torture and prints a table per scenario. It
// exits 1 when a target was missed or a scenario could not run.
func tortureCommand(ctx context.Context, cio *cmdIO, args []string) int {
	fs := flag.NewFlagSet("torture", flag.ContinueOnError)
	fs.SetOutput(cio.stderr)
	scenarios := fs.String("scenario", "", "comma-separated scenarios: "+strings.Join(bench.TortureScenarios(), ", ")+" (default all)")
	phase := fs.Duration("phase", 5*time.Second, "length of each measured phase")
	soak := fs.Duration("soak", 0, "run the chaos scenario this long, sampling descriptors, goroutines and heap for a trend")
	budget := fs.Int64("budget", engine.DefaultMemoryBudget, "the memory scenario's server budget in bytes")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ipcbench torture [flags]\n\nScenarios:\n")
		for _, n := range bench.TortureScenarios() {
			fmt.Fprintf(fs.Output(), "  %s\n", n)
		}
		fmt.Fprintf(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	o := bench.TortureOptions{Scenarios: bench.SplitList(*scenarios), Phase: *phase, Soak: *soak, Budget: *budget, Progress: cio.stderr}
	reports, err := bench.Torture(ctx, o)
	if errors.Is(err, bench.ErrUsage) {
		fmt.Fprintln(cio.stderr, "ipcbench torture:", err)
		return exitUsage
	}
	status := exitOK
	for _, r := range reports {
		printTorture(cio, r)
		if !r.Pass() {
			status = exitFail
		}
	}
	switch {
	case ctx.Err() != nil:
		return exitInterrupted
	case err != nil:
		fmt.Fprintln(cio.stderr, "ipcbench torture:", err)
		return exitFail
	}
	return status
}

func printTorture(cio *cmdIO, r *bench.TortureReport) {
	verdict := "pass"
	if !r.Pass() {
		verdict = "FAIL"
	}
	fmt.Fprintf(cio.stdout, "\n%s: %s\n  %s\n", r.Scenario, verdict, r.Doc)
	if r.Err != nil {
		fmt.Fprintf(cio.stdout, "  could not run: %v\n", r.Err)
		return
	}
	tw := tabwriter.NewWriter(cio.stdout, 2, 8, 2, ' ', 0)
	for _, row := range r.Rows {
		mark := ""
		switch {
		case row.Target == "":
		case row.OK:
			mark = "ok (target " + row.Target + ")"
		default:
			mark = "MISSED (target " + row.Target + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", row.Name, row.Value, mark)
	}
	tw.Flush()
}
