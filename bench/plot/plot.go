package plot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/pktipc/pktipc/bench"
)

// Chart size: readable in a Markdown page without scaling.
const (
	width  = 16 * vg.Centimeter
	height = 10 * vg.Centimeter
)

// ErrNoData is returned when there is nothing to draw.
var ErrNoData = errors.New("plot: no data to draw")

// LatencyCDF writes an SVG of the latency distribution of each record: the
// fraction of operations (y, percent) completed within a time (x, µs, log
// scale).
func LatencyCDF(w io.Writer, title string, recs []*bench.Record) error {
	p := gplot.New()
	p.Title.Text = title
	p.X.Label.Text = "latency (µs, log scale)"
	p.Y.Label.Text = "operations completed (%)"
	p.X.Scale = gplot.LogScale{}
	p.X.Tick.Marker = gplot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	n := 0
	for i, r := range recs {
		var xys plotter.XYs
		for _, pt := range r.CDF {
			if pt.NS <= 0 {
				continue
			}
			xys = append(xys, plotter.XY{X: float64(pt.NS) / 1e3, Y: pt.Quantile * 100})
		}
		if len(xys) == 0 {
			continue
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("plot: %s: %w", r.Peer, err)
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(r.Peer, line)
		n++
	}
	if n == 0 {
		return ErrNoData
	}
	return write(w, p)
}

// Throughput writes an SVG of operations per second (y) against concurrent
// clients (x, log scale), one line per peer.
func Throughput(w io.Writer, title string, recs []*bench.Record) error {
	byPeer := map[string]plotter.XYs{}
	var peers []string
	for _, r := range recs {
		if !slices.Contains(peers, r.Peer) {
			peers = append(peers, r.Peer)
		}
		byPeer[r.Peer] = append(byPeer[r.Peer], plotter.XY{X: float64(r.Conns), Y: r.OpsPerSec})
	}
	p := gplot.New()
	p.Title.Text = title
	p.X.Label.Text = "concurrent clients (log scale)"
	p.Y.Label.Text = "operations per second"
	p.X.Scale = gplot.LogScale{}
	p.X.Tick.Marker = gplot.LogTicks{Prec: -1}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	n := 0
	for i, peer := range peers {
		xys := byPeer[peer]
		slices.SortFunc(xys, func(a, b plotter.XY) int {
			switch {
			case a.X < b.X:
				return -1
			case a.X > b.X:
				return 1
			}
			return 0
		})
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("plot: %s: %w", peer, err)
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(peer, line, points)
		n++
	}
	if n == 0 {
		return ErrNoData
	}
	// Headroom above the highest point for the legend.
	p.Y.Max *= 1 + 0.08*float64(n)
	return write(w, p)
}

func write(w io.Writer, p *gplot.Plot) error {
	wt, err := p.WriterTo(width, height, "svg")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}

// WriteAll writes every chart of res into dir (created if missing): a
// latency CDF per case except streams (whose samples are send times, not
// round trips), and throughput against clients for the concurrency and
// connect scenarios when they ran at several client counts. It returns the
// charts with paths relative to relTo (the report's directory), in report
// order.
func WriteAll(dir, relTo string, res *bench.Results) ([]bench.Chart, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var charts []bench.Chart
	save := func(name, title string, draw func(io.Writer) error) error {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		err = draw(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if errors.Is(err, ErrNoData) {
			return os.Remove(path)
		}
		if err != nil {
			return err
		}
		rel, rerr := filepath.Rel(relTo, path)
		if rerr != nil {
			rel = path
		}
		charts = append(charts, bench.Chart{Title: title, Path: filepath.ToSlash(rel)})
		return nil
	}
	for _, c := range res.Cases {
		if c.Scenario == bench.Stream {
			continue
		}
		recs := recordsOf(res, func(r *bench.Record) bool { return r.Case == c })
		if len(recs) == 0 {
			continue
		}
		title := "Latency CDF: " + c.Title()
		name := fmt.Sprintf("cdf-%s-%d-c%d.svg", c.Scenario, c.Size, c.Conns)
		if err := save(name, title, func(w io.Writer) error { return LatencyCDF(w, title, recs) }); err != nil {
			return charts, err
		}
	}
	for _, k := range []bench.Kind{bench.Concurrency, bench.Connect} {
		recs := recordsOf(res, func(r *bench.Record) bool { return r.Scenario == k })
		if len(recs) == 0 {
			continue
		}
		// One size per chart: the first one's.
		size := recs[0].Size
		recs = recordsOf(res, func(r *bench.Record) bool { return r.Scenario == k && r.Size == size })
		conns := map[int]bool{}
		for _, r := range recs {
			conns[r.Conns] = true
		}
		if len(conns) < 2 {
			continue
		}
		title := fmt.Sprintf("Throughput against clients: %s, %s", k, bench.FormatSize(recs[0].Size))
		name := fmt.Sprintf("throughput-%s.svg", k)
		if err := save(name, title, func(w io.Writer) error { return Throughput(w, title, recs) }); err != nil {
			return charts, err
		}
	}
	return charts, nil
}

func recordsOf(res *bench.Results, keep func(*bench.Record) bool) []*bench.Record {
	var out []*bench.Record
	for _, peer := range res.PeersWithRecords() {
		for i := range res.Records {
			r := &res.Records[i]
			if r.Peer == peer && keep(r) {
				out = append(out, r)
			}
		}
	}
	return out
}
