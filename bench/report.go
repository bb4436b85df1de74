package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// WriteJSON writes res as indented JSON. Safe for concurrent use with other
// readers of res.
func WriteJSON(w io.Writer, res *Results) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// column is one column of a result table.
type column struct {
	head  string
	right bool
	cell  func(r *Record) string
}

func (res *Results) anyCounter(pick func(r *Record) *float64) bool {
	for i := range res.Records {
		if pick(&res.Records[i]) != nil {
			return true
		}
	}
	return false
}

// columns chooses the table columns: counters appear only when some record
// has them.
func (res *Results) columns() []column {
	cols := []column{
		{"peer", false, func(r *Record) string { return r.Peer }},
		{"ops/s", true, func(r *Record) string { return FormatRate(r.OpsPerSec) }},
		{"payload/s", true, func(r *Record) string { return FormatBytesRate(r.BytesPerSec) }},
		{"p50", true, func(r *Record) string { return FormatNS(float64(r.Latency.P50)) }},
		{"p90", true, func(r *Record) string { return FormatNS(float64(r.Latency.P90)) }},
		{"p99", true, func(r *Record) string { return FormatNS(float64(r.Latency.P99)) }},
		{"p99.9", true, func(r *Record) string { return FormatNS(float64(r.Latency.P999)) }},
		{"max", true, func(r *Record) string { return FormatNS(float64(r.Latency.Max)) }},
		{"cpu/op client", true, func(r *Record) string { return FormatNS(r.ClientCPUPerOp) }},
		{"cpu/op server", true, func(r *Record) string { return FormatNS(r.ServerCPUPerOp) }},
	}
	if res.anyCounter(func(r *Record) *float64 { return r.ServerCounters.ContextSwitches }) {
		cols = append(cols, column{"cs/op server", true, func(r *Record) string { return formatCount(r.ServerCounters.ContextSwitches) }})
	}
	if res.anyCounter(func(r *Record) *float64 { return r.ServerCounters.Instructions }) {
		cols = append(cols, column{"instr/op server", true, func(r *Record) string { return formatCount(r.ServerCounters.Instructions) }})
	}
	if res.anyCounter(func(r *Record) *float64 { return r.ServerCounters.Cycles }) {
		cols = append(cols, column{"cycles/op server", true, func(r *Record) string { return formatCount(r.ServerCounters.Cycles) }})
	}
	cols = append(cols,
		column{"x unix", true, func(r *Record) string { return FormatRatio(r.XUnix) }},
		column{"x C", true, func(r *Record) string { return FormatRatio(r.XC) }},
	)
	return cols
}

// caseRecords returns the records of c in table order.
func (res *Results) caseRecords(c Case) []*Record {
	var out []*Record
	for _, name := range res.PeersWithRecords() {
		if r := res.Find(c, name); r != nil {
			out = append(out, r)
		}
	}
	return out
}

// headlineNote says what the ratio columns compare for scenario k.
func headlineNote(k Kind) string {
	switch k {
	case Stream:
		return "x unix, x C: baseline payload/s ÷ this peer's (lower is better). Latencies: time to hand one message to the transport, from the end of the one before."
	case FDPass:
		return "x unix, x C: baseline messages/s ÷ this peer's (lower is better). Latencies: time to hand one message to the transport, from the end of the one before."
	case Concurrency:
		return "x unix, x C: baseline ops/s ÷ this peer's (lower is better)"
	}
	return "x unix, x C: this peer's p50 ÷ the baseline's (lower is better)"
}

// writeTable writes one Markdown table with padded, aligned cells.
func writeTable(w io.Writer, cols []column, recs []*Record) {
	cells := make([][]string, len(recs)+1)
	width := make([]int, len(cols))
	cells[0] = make([]string, len(cols))
	for j, c := range cols {
		cells[0][j] = c.head
		width[j] = max(utf8.RuneCountInString(c.head), 3)
	}
	for i, r := range recs {
		cells[i+1] = make([]string, len(cols))
		for j, c := range cols {
			s := c.cell(r)
			cells[i+1][j] = s
			width[j] = max(width[j], utf8.RuneCountInString(s))
		}
	}
	pad := func(s string, n int, right bool) string {
		fill := strings.Repeat(" ", n-utf8.RuneCountInString(s))
		if right {
			return fill + s
		}
		return s + fill
	}
	line := func(row []string) {
		var b strings.Builder
		b.WriteString("|")
		for j, s := range row {
			b.WriteString(" " + pad(s, width[j], cols[j].right) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	line(cells[0])
	var sep strings.Builder
	sep.WriteString("|")
	for j, c := range cols {
		if c.right {
			sep.WriteString(" " + strings.Repeat("-", width[j]-1) + ": |")
		} else {
			sep.WriteString(" " + strings.Repeat("-", width[j]) + " |")
		}
	}
	fmt.Fprintln(w, sep.String())
	for _, row := range cells[1:] {
		line(row)
	}
}

// WriteTables writes one Markdown table per case, then the peers that were
// unavailable and the runs that failed. heading is the Markdown heading
// prefix of each case ("###", or "" for plain titles).
func WriteTables(w io.Writer, res *Results, heading string) error {
	cols := res.columns()
	var b bytes.Buffer
	for _, c := range res.Cases {
		recs := res.caseRecords(c)
		if len(recs) == 0 {
			continue
		}
		title := c.Title()
		if heading != "" {
			title = heading + " " + title
		}
		fmt.Fprintf(&b, "%s\n\n", title)
		writeTable(&b, cols, recs)
		fmt.Fprintf(&b, "\n%s\n\n", headlineNote(c.Scenario))
		if note := roundsNote(recs); note != "" {
			fmt.Fprintf(&b, "%s\n\n", note)
		}
		for _, r := range recs {
			for _, n := range r.Notes {
				fmt.Fprintf(&b, "- %s: %s\n", r.Peer, strings.ReplaceAll(n, "\n", " "))
			}
		}
		if slices.ContainsFunc(recs, func(r *Record) bool { return len(r.Notes) > 0 }) {
			b.WriteString("\n")
		}
	}
	for _, c := range res.Cases {
		if len(res.caseRecords(c)) == 0 && !res.caseFailed(c) {
			fmt.Fprintf(&b, "%s: no peer here runs this scenario\n\n", c.Title())
		}
	}
	for _, p := range res.Peers {
		if p.Unavailable != "" {
			fmt.Fprintf(&b, "peer %s not run: %s\n\n", p.Name, p.Unavailable)
		}
	}
	for _, f := range res.Failures {
		fmt.Fprintf(&b, "FAILED %s %s: %s\n\n", f.Peer, f.Case, f.Error)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// roundsNote lists the headline of every round of each peer in recs that
// ran in several, or returns "".
func roundsNote(recs []*Record) string {
	var parts []string
	for _, r := range recs {
		if len(r.RoundHeadlines) == 0 {
			continue
		}
		vals := make([]string, len(r.RoundHeadlines))
		for i, v := range r.RoundHeadlines {
			vals[i] = formatHeadline(r.Scenario, v)
		}
		parts = append(parts, fmt.Sprintf("%s %s%s", r.Peer, strings.Join(vals, ", "), headlineUnit(r.Scenario)))
	}
	if len(parts) == 0 {
		return ""
	}
	return "Rounds, in the order they ran (the row is the median one): " + strings.Join(parts, "; ") + "."
}

// formatHeadline writes a headline value of scenario k; headlineUnit
// follows a list of them.
func formatHeadline(k Kind, v float64) string {
	switch {
	case k == Stream:
		return FormatBytesRate(v)
	case k.ThroughputBound():
		return FormatRate(v)
	}
	return FormatNS(v)
}

func headlineUnit(k Kind) string {
	switch {
	case k == Stream:
		return ""
	case k.ThroughputBound():
		return " ops/s"
	}
	return " (p50)"
}

func (res *Results) caseFailed(c Case) bool {
	for _, f := range res.Failures {
		if f.Case == c {
			return true
		}
	}
	return false
}

// Chart is an SVG chart referenced by a report.
type Chart struct {
	Title string
	Path  string // relative to the report
}

// ReportOptions configure WriteReport.
type ReportOptions struct {
	// Command is the command line that produced the results.
	Command string
	// Charts are embedded as images.
	Charts []Chart
	// Reading is hand-written prose kept between regenerations (see
	// ExtractReading).
	Reading string
}

// Markers around the hand-written part of BENCHMARKS.md, which `ipcbench
// report` keeps when it regenerates the file.
const (
	readingBegin = "<!-- reading:begin (hand-written; kept by ipcbench report) -->"
	readingEnd   = "<!-- reading:end -->"
)

// ExtractReading returns the hand-written text between the reading markers
// of an existing report, or "" when there is none.
func ExtractReading(report []byte) string {
	_, rest, ok := bytes.Cut(report, []byte(readingBegin))
	if !ok {
		return ""
	}
	text, _, ok := bytes.Cut(rest, []byte(readingEnd))
	if !ok {
		return ""
	}
	return string(bytes.TrimSpace(text))
}

// WriteReport writes BENCHMARKS.md: how and where the numbers were taken,
// the peers, one table per case with ratios to the baselines of the same
// run, the charts, generated facts and the hand-written reading.
func WriteReport(w io.Writer, res *Results, opt ReportOptions) error {
	var b bytes.Buffer
	m := res.Machine
	fmt.Fprintf(&b, "# pktipc benchmarks\n\n")
	fmt.Fprintf(&b, "Generated by `ipcbench report`; rerun it to refresh. Only the Reading section is written by hand.\n\n")
	if opt.Command != "" {
		fmt.Fprintf(&b, "- Command: `%s`\n", opt.Command)
	}
	fmt.Fprintf(&b, "- Date: %s\n", res.Started.Format(time.DateOnly))
	fmt.Fprintf(&b, "- Machine: %s, %d cores, kernel %s (%s/%s)\n", m.CPU, m.Cores, m.Kernel, m.OS, m.Arch)
	fmt.Fprintf(&b, "- Go: %s\n", m.GoVersion)
	runs := len(res.Records) + len(res.Failures)
	for _, r := range res.Records {
		runs += max(len(r.RoundHeadlines)-1, 0)
	}
	fmt.Fprintf(&b, "- Suite: %s; each run measures %v after a %v warm-up; %d runs in %s\n",
		res.Suite, time.Duration(res.DurationNS), time.Duration(res.WarmupNS), runs,
		formatDuration(time.Duration(res.WallNS)))
	if res.Rounds > 1 {
		fmt.Fprintf(&b, "- Rounds: each case ran %d times, its peers taking turns in each round; a row is the peer's run of the median headline (p50, or throughput where the ratios compare throughput), and the rounds' headlines follow each table\n",
			res.Rounds)
	}
	b.WriteString("\n")

	fmt.Fprintf(&b, "## Peers\n\n")
	if err := WritePeers(&b, res); err != nil {
		return err
	}
	b.WriteString(`
Every server runs in its own process; clients run in the benchmark process
(the C and git clients in their own). Latencies are per operation, in HDR
histograms; "cpu/op" is CPU time per operation of the client and of the
server process, read around the measured window; "cs/op" counts context
switches through perf_event_open, "n/a" where the kernel refuses a counter.
The ratio columns divide by the "unix" and "c" baselines measured in the same
run, because absolute times drift on shared machines.

## Results

`)
	if err := WriteTables(&b, res, "###"); err != nil {
		return err
	}
	if len(opt.Charts) > 0 {
		fmt.Fprintf(&b, "## Charts\n\n")
		for _, c := range opt.Charts {
			fmt.Fprintf(&b, "![%s](%s)\n\n", c.Title, c.Path)
		}
	}
	fmt.Fprintf(&b, "## Facts\n\n")
	writeFacts(&b, res)
	fmt.Fprintf(&b, "\n## Reading\n\n%s\n", readingBegin)
	if opt.Reading != "" {
		fmt.Fprintf(&b, "%s\n", opt.Reading)
	}
	fmt.Fprintf(&b, "%s\n", readingEnd)
	_, err := w.Write(b.Bytes())
	return err
}

// WritePeers writes the peers of res as a Markdown table, one line each:
// what its server and client are, and why it did not run if it did not.
// Like every function that writes Results, it only reads res: any
// goroutine may call it.
func WritePeers(w io.Writer, res *Results) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "| peer | what runs |\n| --- | --- |\n")
	for _, p := range res.Peers {
		doc := p.Doc
		if p.Unavailable != "" {
			doc += " — **not run**: " + p.Unavailable
		}
		fmt.Fprintf(&b, "| %s | %s |\n", p.Name, strings.ReplaceAll(doc, "|", `\|`))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writeFacts lists, per case, the peers from best to worst on the headline,
// with each one's ratio to the best.
func writeFacts(b *bytes.Buffer, res *Results) {
	for _, c := range res.Cases {
		recs := res.caseRecords(c)
		if len(recs) < 2 {
			continue
		}
		better := func(x, y *Record) bool {
			if c.Scenario.ThroughputBound() {
				return x.Headline() > y.Headline()
			}
			return x.Headline() < y.Headline()
		}
		sorted := append([]*Record(nil), recs...)
		for i := 1; i < len(sorted); i++ {
			for j := i; j > 0 && better(sorted[j], sorted[j-1]); j-- {
				sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
			}
		}
		best := sorted[0]
		var parts []string
		for _, r := range sorted {
			parts = append(parts, fmt.Sprintf("%s %s", r.Peer, FormatRatio(r.ratioTo(best))))
		}
		what := "p50"
		if c.Scenario.ThroughputBound() {
			what = "throughput"
		}
		fmt.Fprintf(b, "- %s, by %s relative to the best: %s\n", c.Title(), what, strings.Join(parts, ", "))
	}
}
