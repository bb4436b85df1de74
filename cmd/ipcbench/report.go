package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pktipc/pktipc/bench"
	"github.com/pktipc/pktipc/bench/plot"
)

func init() {
	register(command{name: "report", summary: "run the full suite and regenerate BENCHMARKS.md with its charts", run: reportCommand})
}

func reportCommand(ctx context.Context, cio *cmdIO, args []string) int {
	fset := newFlagSet("report", "report [flags]", cio)
	var sf selectionFlags
	sf.add(fset, false)
	out := fset.String("out", "BENCHMARKS.md", "report to write")
	plots := fset.String("plots", filepath.Join("docs", "bench"), "directory for the SVG charts")
	jsonOut := fset.String("json", "", "also write the raw results as JSON to this file")
	if code, stop := parseFlags(fset, args); stop {
		return code
	}
	sf.suite = "full"
	sel, err := sf.selection()
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench report: %v\n", err)
		return exitUsage
	}
	// Keep the hand-written reading of the current report.
	old, err := os.ReadFile(*out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(cio.stderr, "ipcbench report: %v\n", err)
		return exitFail
	}
	res, code := execute(ctx, cio, "report", &sf, sel)
	if code != exitOK {
		return code
	}
	res.Command = strings.Join(append([]string{"ipcbench", "report"}, args...), " ")
	charts, err := plot.WriteAll(*plots, filepath.Dir(*out), res)
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench report: charts: %v\n", err)
		return exitFail
	}
	if *jsonOut != "" {
		if err := writeFileAtomic(*jsonOut, func(f *os.File) error { return bench.WriteJSON(f, res) }); err != nil {
			fmt.Fprintf(cio.stderr, "ipcbench report: %v\n", err)
			return exitFail
		}
	}
	opt := bench.ReportOptions{Command: res.Command, Charts: charts, Reading: bench.ExtractReading(old)}
	if err := writeFileAtomic(*out, func(f *os.File) error { return bench.WriteReport(f, res, opt) }); err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench report: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(cio.stdout, "wrote %s (%d records, %d charts in %s)\n", *out, len(res.Records), len(charts), *plots)
	if len(res.Failures) > 0 {
		fmt.Fprintf(cio.stderr, "ipcbench report: %d runs failed; see the report\n", len(res.Failures))
		return exitFail
	}
	return exitOK
}

// writeFileAtomic writes path through a temporary file in the same
// directory, so that an interrupted run never leaves half a report.
func writeFileAtomic(path string, write func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".ipcbench-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
