package main

import (
	"fmt"
	"image/color"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The plots, each over the load's seconds with the fault timeline beneath:
//
//	latency.png    answers' p50, p90, p99 and max per bucket
//	calls.png      scenes asked, scenes drawn and calls to WeChat, cumulative
//	rate.png       code calls reaching WeChat in 1 s and 10 s, against the bound
//	resources.png  RSS, goroutines and open fds of each replica
func (s *soak) plot(sum *summary) error {
	answers := s.load.snapshot()
	calls := s.up.snapshot()
	d := s.cfg.duration.Seconds()
	bucket := 1.0
	if d > 120 {
		bucket = 5
	}
	for _, f := range []struct {
		name  string
		plots []*plot.Plot
	}{
		{"latency.png", []*plot.Plot{latencyPlot(answers, bucket, d), s.faultLane(d)}},
		{"calls.png", []*plot.Plot{s.callsPlot(calls, d), s.faultLane(d)}},
		{"rate.png", []*plot.Plot{s.ratePlot(calls, 1, sum.Rate.Limit1s, d), s.ratePlot(calls, 10, sum.Rate.Limit10s, d), s.faultLane(d)}},
		{"resources.png", s.resourcePlots(d)},
	} {
		if err := savePlots(filepath.Join(s.cfg.out, f.name), f.plots); err != nil {
			return err
		}
	}
	return nil
}

func savePlots(path string, plots []*plot.Plot) error {
	w, h := 10*vg.Inch, vg.Length(2.4*float64(len(plots)))*vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(72))
	dc := draw.New(img)
	col := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		col[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(col, draw.Tiles{Rows: len(plots), Cols: 1, PadTop: 4, PadBottom: 4, PadLeft: 4, PadRight: 8, PadY: 6}, dc)
	for i, p := range plots {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("soak: %s: %w", path, err)
	}
	return f.Close()
}

var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, {0xff, 0x7f, 0x0e, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0xd6, 0x27, 0x28, 0xff},
	{0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff}, {0xe3, 0x77, 0xc2, 0xff}, {0x7f, 0x7f, 0x7f, 0xff},
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.Color, dashed bool) {
	if len(xys) == 0 {
		return
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return
	}
	l.Color, l.Width = c, vg.Points(1.2)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l)
	if name != "" {
		p.Legend.Add(name, l)
	}
}

func newPlot(title, ylabel string, d float64) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.X.Min, p.X.Max = 0, d
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	return p
}

// latencyPlot draws what callers waited, per bucket of seconds, on a
// logarithmic scale.
func latencyPlot(answers []answer, bucket, d float64) *plot.Plot {
	p := newPlot("latency of every answer (ms), by when the request was sent", "ms", d)
	by := map[int][]float64{}
	for _, a := range answers {
		b := int(float64(a.At) / bucket)
		by[b] = append(by[b], math.Max(0.1, float64(a.Took)*1000))
	}
	qs := []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"max", 1}}
	lines := make([]plotter.XYs, len(qs))
	for _, b := range slices.Sorted(maps.Keys(by)) {
		v := by[b]
		sort.Float64s(v)
		for i, q := range qs {
			lines[i] = append(lines[i], plotter.XY{X: (float64(b) + 0.5) * bucket, Y: v[min(len(v)-1, int(q.q*float64(len(v))))]})
		}
	}
	for i, q := range qs {
		addLine(p, q.name, lines[i], palette[i], false)
	}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min = 0.1
	for _, l := range lines {
		for _, xy := range l {
			p.Y.Max = math.Max(p.Y.Max, xy.Y*1.5)
		}
	}
	// Head room on the log scale for the legend.
	p.Y.Max = math.Max(p.Y.Max, 10) * 20
	return p
}

func (s *soak) callsPlot(calls []call, d float64) *plot.Plot {
	p := newPlot("distinct codes against calls to WeChat (cumulative)", "count", d)
	s.load.mu.Lock()
	askedAt := slices.Clone(s.load.newAt)
	s.load.mu.Unlock()
	var asked, drawn, images, all plotter.XYs
	for i, at := range askedAt {
		asked = append(asked, plotter.XY{X: float64(at), Y: float64(i + 1)})
	}
	seen := map[string]bool{}
	for _, c := range calls {
		if c.Path != codePath || c.At < 0 {
			continue
		}
		all = append(all, plotter.XY{X: c.At, Y: float64(len(all) + 1)})
		if c.Outcome != "image" {
			continue
		}
		images = append(images, plotter.XY{X: c.At, Y: float64(len(images) + 1)})
		if !seen[c.Scene] {
			seen[c.Scene] = true
			drawn = append(drawn, plotter.XY{X: c.At, Y: float64(len(drawn) + 1)})
		}
	}
	addLine(p, "distinct scenes asked by callers", thin(asked), palette[0], false)
	addLine(p, "distinct scenes WeChat drew", thin(drawn), palette[2], false)
	addLine(p, "whole-image calls to WeChat", thin(images), palette[3], true)
	addLine(p, "code calls to WeChat, any outcome", thin(all), palette[1], false)
	return p
}

// thin keeps at most ~2000 points of a monotone series.
func thin(xys plotter.XYs) plotter.XYs {
	if len(xys) <= 2000 {
		return xys
	}
	step := len(xys) / 2000
	var out plotter.XYs
	for i := 0; i < len(xys); i += step {
		out = append(out, xys[i])
	}
	return append(out, xys[len(xys)-1])
}

// ratePlot draws the code calls reaching WeChat in the w seconds before
// every tenth of a second, and the bound.
func (s *soak) ratePlot(calls []call, w float64, bound int, d float64) *plot.Plot {
	p := newPlot(fmt.Sprintf("code calls reaching WeChat in the last %g s (every replica)", w), "calls", d)
	var at []float64
	for _, c := range calls {
		if c.Path == codePath && c.At >= 0 {
			at = append(at, c.At)
		}
	}
	sort.Float64s(at)
	var xys plotter.XYs
	i, j := 0, 0
	for t := 0.0; t <= d+1; t += 0.1 {
		for j < len(at) && at[j] <= t {
			j++
		}
		for i < j && at[i] <= t-w {
			i++
		}
		xys = append(xys, plotter.XY{X: t, Y: float64(j - i)})
	}
	addLine(p, "calls", xys, palette[0], false)
	addLine(p, fmt.Sprintf("bound (N-BURST)*%g + BURST + 2 = %d", w, bound), plotter.XYs{{X: 0, Y: float64(bound)}, {X: d, Y: float64(bound)}}, palette[3], true)
	most := float64(bound)
	for _, xy := range xys {
		most = math.Max(most, xy.Y)
	}
	p.Y.Min, p.Y.Max = 0, most*1.5 // head room for the legend
	return p
}

func (s *soak) resourcePlots(d float64) []*plot.Plot {
	s.mu.Lock()
	samples := slices.Clone(s.samples)
	s.mu.Unlock()
	type series struct {
		name string
		val  func(sample) float64
	}
	var out []*plot.Plot
	for _, sr := range []series{
		{"RSS (MiB, /proc)", func(x sample) float64 { return float64(x.RSS) / (1 << 20) }},
		{"goroutines (go_goroutines)", func(x sample) float64 { return float64(x.Goroutines) }},
		{"open fds (/proc)", func(x sample) float64 { return float64(x.FDs) }},
	} {
		p := newPlot(sr.name+" of each replica", "", d)
		lines := map[incarnation]plotter.XYs{}
		for _, x := range samples {
			k := incarnation{x.Slot, x.Inc}
			lines[k] = append(lines[k], plotter.XY{X: x.At, Y: sr.val(x)})
		}
		named := map[int]bool{}
		for _, k := range slices.SortedFunc(maps.Keys(lines), func(a, b incarnation) int {
			return (a.Slot*1000 + a.Inc) - (b.Slot*1000 + b.Inc)
		}) {
			name := ""
			if !named[k.Slot] {
				name, named[k.Slot] = fmt.Sprintf("replica %d", k.Slot), true
			}
			addLine(p, name, lines[k], palette[k.Slot%len(palette)], false)
		}
		p.Y.Min = 0
		out = append(out, p)
	}
	return append(out, s.faultLane(d))
}

// faultLane is the timeline of the faults, one row per kind.
func (s *soak) faultLane(d float64) *plot.Plot {
	p := newPlot("faults", "", d)
	p.X.Label.Text = "seconds since the load began"
	var kinds []string
	for _, k := range allKinds {
		for _, f := range s.faults {
			if f.Kind == k && f.Started > 0 {
				kinds = append(kinds, k)
				break
			}
		}
	}
	// A row of its own: when some replica's Redis breaker was open,
	// whatever opened it.
	breaker := s.breakerOpen()
	var ticks []plot.Tick
	for i, k := range kinds {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: k})
	}
	if len(breaker) > 0 {
		ticks = append(ticks, plot.Tick{Value: float64(len(kinds)), Label: "breaker open"})
		for _, b := range breaker {
			y := float64(len(kinds))
			poly, err := plotter.NewPolygon(plotter.XYs{{X: b[0] - 0.5, Y: y - 0.35}, {X: b[1] + 0.5, Y: y - 0.35},
				{X: b[1] + 0.5, Y: y + 0.35}, {X: b[0] - 0.5, Y: y + 0.35}})
			if err == nil {
				poly.Color, poly.LineStyle.Width = palette[7], 0
				p.Add(poly)
			}
		}
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min, p.Y.Max = -0.6, math.Max(0.6, float64(len(ticks))-0.4)
	groups := map[string]int{"token": 4, "upstream": 1, "redis": 3, "replica": 2}
	for _, f := range s.faults {
		i := slices.Index(kinds, f.Kind)
		if i < 0 {
			continue
		}
		end := math.Max(f.Ended, f.Started+d/300)
		y := float64(i)
		poly, err := plotter.NewPolygon(plotter.XYs{{X: f.Started, Y: y - 0.35}, {X: end, Y: y - 0.35},
			{X: end, Y: y + 0.35}, {X: f.Started, Y: y + 0.35}})
		if err != nil {
			continue
		}
		poly.Color = palette[groups[group(f.Kind)]]
		poly.LineStyle.Width = 0
		p.Add(poly)
	}
	return p
}
