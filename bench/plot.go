package bench

import (
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrNoCurve is returned by WritePlot when no result has a latency curve
// (nothing succeeded, or the results came from elsewhere without one).
var ErrNoCurve = errors.New("bench: no latency curve to plot")

// Plot geometry, in SVG user units (pixels).
const (
	panelW, panelH         = 440, 340
	plotLeft, plotRight    = 56, 34
	plotTop, plotBottom    = 64, 48
	plotLegendLine         = 16
	minNines, minLatencyMs = 2.0, 0.1
)

// Curve colours: zraft red, the baseline blue, others grey.
var plotColors = map[string]string{NameZraft: "#d62728", NameBaseline: "#1f77b4"}

// WritePlot draws the latency percentile curves (HDR style: the x axis is
// the percentile on a log scale of 1/(1−p), so 90%, 99%, 99.9% ... are
// evenly spaced; the y axis is latency in milliseconds on a log scale) as
// one SVG image. Each zraft result gets a panel with the baseline of the
// same workload drawn over it; results without a partner get a panel of
// their own. Panels stand side by side.
func WritePlot(w io.Writer, results ...Result) error {
	panels := plotPanels(results)
	if len(panels) == 0 {
		return ErrNoCurve
	}
	var b strings.Builder
	width := panelW * len(panels)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, panelH, width, panelH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, panelH)
	for i, p := range panels {
		drawPanel(&b, float64(i*panelW), p)
	}
	b.WriteString("</svg>\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("bench: write plot: %w", err)
	}
	return nil
}

// plotPanels groups results into panels: each zraft result with its
// baseline, then every result not yet drawn; results without a curve are
// left out.
func plotPanels(results []Result) [][]Result {
	var panels [][]Result
	used := make([]bool, len(results))
	for i, z := range results {
		if z.Name != NameZraft || len(z.Curve) == 0 {
			continue
		}
		panel := []Result{z}
		used[i] = true
		for j, r := range results {
			if !used[j] && r.Name == NameBaseline && len(r.Curve) > 0 && sameShape(z.Config, r.Config) {
				panel = append(panel, r)
				used[j] = true
				break
			}
		}
		panels = append(panels, panel)
	}
	for j, r := range results {
		if !used[j] && len(r.Curve) > 0 {
			panels = append(panels, []Result{r})
		}
	}
	return panels
}

// workloadTitle names a workload, for example "writes 64×8" or "30% reads 8×8".
func workloadTitle(c Config) string {
	kind := fmt.Sprintf("%.0f%% reads", c.ReadRatio*100)
	switch c.ReadRatio {
	case 0:
		kind = "writes"
	case 1:
		kind = "reads"
	}
	return fmt.Sprintf("%s %d×%d, %d B", kind, c.Sessions, c.InFlight, c.PayloadSize)
}

// nines is the x coordinate of percentile p: log10(1/(1−p/100)); the 100th
// percentile (the maximum) sits at last+0.15, just right of the curve's
// last finite point.
func nines(p, last float64) float64 {
	if p >= 100 {
		return last + 0.15
	}
	return math.Log10(1 / (1 - p/100))
}

func drawPanel(b *strings.Builder, x0 float64, panel []Result) {
	// Axis ranges over every curve of the panel.
	lastNines, maxMs := minNines, 1.0
	for _, r := range panel {
		for _, pt := range r.Curve {
			if pt.Percentile < 100 {
				lastNines = max(lastNines, math.Log10(1/(1-pt.Percentile/100)))
			}
			maxMs = max(maxMs, ms64(pt.Latency))
		}
	}
	xMax := math.Ceil(lastNines + 0.15)
	yLo, yHi := math.Log10(minLatencyMs), math.Ceil(math.Log10(maxMs))
	left, top := x0+plotLeft, float64(plotTop)
	w, h := float64(panelW-plotLeft-plotRight), float64(panelH-plotTop-plotBottom)
	px := func(n float64) float64 { return left + w*n/xMax }
	py := func(msv float64) float64 {
		v := math.Log10(max(msv, minLatencyMs))
		return top + h*(1-(v-yLo)/(yHi-yLo))
	}

	fmt.Fprintf(b, `<text x="%.1f" y="16" font-size="13" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(workloadTitle(panel[0].Config)))
	// Grid and ticks: every nine on x, every decade on y.
	for n := 0.0; n <= xMax; n++ {
		label := percentLabel(n)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", px(n), top, px(n), top+h)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(n), top+h+14, label)
	}
	for d := int(math.Round(yLo)); d <= int(yHi); d++ {
		v := math.Pow10(d)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, py(v), left+w, py(v))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, py(v)+4, strconv.FormatFloat(v, 'f', max(-d, 0), 64))
	}
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n", left, top, w, h)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">percentile</text>`+"\n", left+w/2, top+h+32)
	fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">latency (ms)</text>`+"\n", x0+12, top+h/2)

	for i, r := range panel {
		color, ok := plotColors[r.Name]
		if !ok {
			color = "#555"
		}
		var pts []string
		for _, pt := range r.Curve {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(nines(pt.Percentile, lastNines)), py(ms64(pt.Latency))))
		}
		fmt.Fprintf(b, `<polyline class="curve" data-name="%s" fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`+"\n",
			html.EscapeString(r.Name), color, strings.Join(pts, " "))
		ly := 32 + float64(i*plotLegendLine) // legend between title and plot
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", left+8, ly-4, left+28, ly-4, color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s: %.0f ops/s, p50 %s ms, p99 %s ms</text>`+"\n",
			left+32, ly, html.EscapeString(r.Name), r.Throughput, ms(r.P50), ms(r.P99))
	}
}

// percentLabel names the percentile n nines up: "0%", "90%", "99%",
// "99.9%", ...
func percentLabel(n float64) string {
	if n <= 0 {
		return "0%"
	}
	return strconv.FormatFloat(100*(1-math.Pow(10, -n)), 'f', max(int(n)-2, 0), 64) + "%"
}

// ms64 is d in milliseconds.
func ms64(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
