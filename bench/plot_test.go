package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// withCurve gives r the curve of n latencies spread from base to 20·base.
func withCurve(r Result, n int, base time.Duration) Result {
	h := hdr.New(histMinMicros, histMaxMicros, histSigFigs)
	for i := range n {
		_ = h.RecordValue(base.Microseconds() * int64(1+19*i/n))
	}
	r.Curve = curve(h)
	return r
}

func TestPercentLabels(t *testing.T) {
	for n, want := range []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"} {
		if got := percentLabel(float64(n)); got != want {
			t.Errorf("percentLabel(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCurveCoversTheNinesTheSamplesResolve(t *testing.T) {
	h := hdr.New(histMinMicros, histMaxMicros, histSigFigs)
	for i := 1; i <= 10_000; i++ {
		_ = h.RecordValue(int64(i))
	}
	c := curve(h)
	if c[0].Percentile != 0 || c[len(c)-1].Percentile != 100 || c[len(c)-1].Latency < 10*time.Millisecond || c[len(c)-1].Latency > 10_100*time.Microsecond {
		t.Fatalf("curve ends %+v ... %+v", c[0], c[len(c)-1])
	}
	// 10,000 samples resolve 99.99% (one sample above it) and no further.
	if last := c[len(c)-2].Percentile; last < 99.98 || last >= 99.995 {
		t.Fatalf("last finite percentile %v, want 99.99", last)
	}
	for i := 1; i < len(c); i++ {
		if c[i].Percentile <= c[i-1].Percentile || c[i].Latency < c[i-1].Latency {
			t.Fatalf("curve not increasing at %d: %+v then %+v", i, c[i-1], c[i])
		}
	}
	if curve(hdr.New(histMinMicros, histMaxMicros, histSigFigs)) != nil {
		t.Fatal("an empty histogram has a curve")
	}
}

// TestWritePlotDrawsEachPairSideBySide: valid SVG, one panel per workload,
// zraft and its baseline drawn in the same panel, higher latency higher up.
func TestWritePlotDrawsEachPairSideBySide(t *testing.T) {
	z1 := withCurve(synthetic(NameZraft, 8, 30000, 2*time.Millisecond), 5000, 2*time.Millisecond)
	b1 := withCurve(synthetic(NameBaseline, 8, 40000, time.Millisecond), 5000, time.Millisecond)
	z2 := withCurve(synthetic(NameZraft, 64, 30000, 8*time.Millisecond), 5000, 8*time.Millisecond)
	b2 := withCurve(synthetic(NameBaseline, 64, 40000, 4*time.Millisecond), 5000, 4*time.Millisecond)
	var buf bytes.Buffer
	if err := WritePlot(&buf, z1, b2, z2, b1); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
	var width string
	type line struct {
		name string
		xs   []float64
		ys   []float64
	}
	var lines []line
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed SVG: %v\n%s", err, buf.String())
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		attr := func(n string) string {
			for _, a := range se.Attr {
				if a.Name.Local == n {
					return a.Value
				}
			}
			return ""
		}
		switch se.Name.Local {
		case "svg":
			width = attr("width")
		case "polyline":
			l := line{name: attr("data-name")}
			for _, p := range strings.Fields(attr("points")) {
				xs, ys, _ := strings.Cut(p, ",")
				x, _ := strconv.ParseFloat(xs, 64)
				y, _ := strconv.ParseFloat(ys, 64)
				l.xs, l.ys = append(l.xs, x), append(l.ys, y)
			}
			lines = append(lines, l)
		}
	}
	if width != strconv.Itoa(2*panelW) {
		t.Fatalf("width %s, want two panels", width)
	}
	if len(lines) != 4 || lines[0].name != NameZraft || lines[1].name != NameBaseline {
		t.Fatalf("curves %v", lines)
	}
	for i, l := range lines {
		panel := float64(i / 2 * panelW)
		for j := range l.xs {
			if l.xs[j] < panel || l.xs[j] > panel+panelW {
				t.Fatalf("curve %d point %d at x %v outside its panel", i, j, l.xs[j])
			}
			if j > 0 && (l.xs[j] <= l.xs[j-1] || l.ys[j] > l.ys[j-1]) {
				t.Fatalf("curve %d: point %d (%v,%v) does not go right and up from (%v,%v)", i, j, l.xs[j], l.ys[j], l.xs[j-1], l.ys[j-1])
			}
		}
	}
	// The zraft curve (twice the latency) lies above its baseline at the median.
	if lines[0].ys[3] >= lines[1].ys[3] {
		t.Fatalf("zraft median drawn at y %v, baseline at %v", lines[0].ys[3], lines[1].ys[3])
	}
	if err := WritePlot(io.Discard, synthetic(NameZraft, 8, 1, time.Millisecond)); !errors.Is(err, ErrNoCurve) {
		t.Fatalf("plot without curves: %v", err)
	}
}
