package bench

import (
	"math"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// CurvePoint is one point of a latency percentile curve: Percentile (0 to
// 100) of the operations completed within Latency.
type CurvePoint struct {
	Percentile float64
	Latency    time.Duration
}

// curveStepsPerNine is how many points the curve has per "nine" (90%, 99%,
// 99.9%, ...), evenly spaced on the log scale of 1/(1-p) that HDR plots use.
const curveStepsPerNine = 10

// curve samples h at percentiles 100·(1−10^(−k/10)) for k = 0, 1, ...,
// while the histogram has at least one sample beyond that percentile, then
// adds 100 (the maximum): at most 10 points per nine, and no more nines
// than the sample count can resolve.
func curve(h *hdr.Histogram) []CurvePoint {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	var pts []CurvePoint
	for k := 0; ; k++ {
		tail := math.Pow(10, -float64(k)/curveStepsPerNine) // share of samples above
		if tail*float64(n) < 1 {
			break
		}
		q := 100 * (1 - tail)
		pts = append(pts, CurvePoint{Percentile: q, Latency: time.Duration(h.ValueAtQuantile(q)) * time.Microsecond})
	}
	return append(pts, CurvePoint{Percentile: 100, Latency: time.Duration(h.Max()) * time.Microsecond})
}
