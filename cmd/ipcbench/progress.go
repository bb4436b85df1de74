package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/pktipc/pktipc/bench"
)

// progressTerminal reports whether progress on f may be a live bar: f is a
// terminal and no CI system is driving us (CI=true is what most set).
func progressTerminal(f *os.File) bool {
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}

// progress turns runner events into a bar with an ETA (terminal) or one
// plain line per run. It is called from the runner's goroutine only.
type progress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	start time.Time
}

func newProgress(cio *cmdIO, total int, estimate time.Duration) *progress {
	p := &progress{w: cio.stderr, start: time.Now()}
	if cio.terminal {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(cio.stderr),
			progressbar.OptionSetDescription("starting"),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetWidth(24),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	} else {
		fmt.Fprintf(p.w, "ipcbench: %d runs, about %s\n", total, estimate.Round(time.Second))
	}
	return p
}

func describe(r bench.Run) string {
	if r.Round > 0 {
		return fmt.Sprintf("%s %s, round %d", r.Peer, r.Case.Title(), r.Round+1)
	}
	return fmt.Sprintf("%s %s", r.Peer, r.Case.Title())
}

func (p *progress) event(ev bench.Progress) {
	if p.bar != nil {
		if !ev.Done {
			p.bar.Describe(describe(ev.Run))
			return
		}
		if ev.Err != nil {
			// Keep failures visible above the bar.
			p.bar.Clear()
			fmt.Fprintf(p.w, "%s: %s\n", describe(ev.Run), firstLine(ev.Err.Error()))
		}
		p.bar.Add(1)
		return
	}
	if !ev.Done {
		return
	}
	status := ""
	switch {
	case ev.Err != nil:
		status = "skipped: " + firstLine(ev.Err.Error())
		if !isUnavailable(ev.Err) {
			status = "FAILED: " + firstLine(ev.Err.Error())
		}
	case ev.Rec != nil:
		status = fmt.Sprintf("p50 %s, %s ops/s", bench.FormatNS(float64(ev.Rec.Latency.P50)), bench.FormatRate(ev.Rec.OpsPerSec))
	}
	width := len(fmt.Sprint(ev.Total))
	fmt.Fprintf(p.w, "[%*d/%d] %s: %s (ETA %s)\n", width, ev.Index, ev.Total, describe(ev.Run), status,
		max(ev.Remaining, 0).Round(time.Second))
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar.Clear()
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func isUnavailable(err error) bool { return errors.Is(err, bench.ErrUnavailable) }
