package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Names of the systems a Result measured.
const (
	// NameZraft is Result.Name of RunZraft.
	NameZraft = "zraft"
	// NameBaseline is Result.Name of RunBaseline.
	NameBaseline = "baseline"
)

// Result is what one run measured. Latencies are of successful operations
// that completed while measuring.
type Result struct {
	// Name is NameZraft or NameBaseline.
	Name string
	// Ops counts successful operations (Reads + Writes).
	Ops    uint64
	Reads  uint64
	Writes uint64
	// Errors counts failed operations; ErrorsByType splits them by kind
	// ("timeout", "outcome_unknown", "app:key not found", ...).
	Errors       uint64
	ErrorsByType map[string]uint64
	// Duration is how long was measured: Config.Duration unless the run
	// ended early.
	Duration time.Duration
	// Throughput is Ops per second of Duration.
	Throughput float64
	// Latency percentiles and maximum, with microsecond resolution.
	P50, P90, P99, P999, Max time.Duration
	// CPUPerOp is the CPU time (user + system) this process used while
	// measuring, per successful operation; 0 when not measured. It counts
	// everything in the process: for the Compare benchmark's in-process
	// cluster that is client, transport, actors, Raft and disk I/O of all
	// three members, for RunBaseline all of dragonboat, for `zraft bench`
	// against a remote cluster only the client. Unlike throughput, it
	// barely depends on what else the machine runs.
	CPUPerOp time.Duration
	// Curve is the latency percentile curve (HDR), from the 0th percentile
	// up to the highest percentile the sample count resolves, for
	// WritePlot and WriteJSON; nil when nothing succeeded.
	Curve []CurvePoint
	// Config is the configuration of the run.
	Config Config
}

// Progress is what a run reports about once per second while it runs.
type Progress struct {
	// Name is the run's Result.Name.
	Name string
	// Phase is PhasePreload, PhaseWarmup or PhaseMeasure.
	Phase string
	// Elapsed is the time since the run started (preloading included).
	Elapsed time.Duration
	// Done counts operations completed in every phase, failed ones too.
	Done uint64
	// Measured and Errors count successful and failed operations measured
	// so far.
	Measured, Errors uint64
	// Rate is operations completed per second over the last interval.
	Rate float64
	// Notifications counts watch notifications received while measuring
	// (RunWatch only; 0 otherwise).
	Notifications uint64
}

// ProgressLine renders p on one line for a terminal, for example
// "zraft    measure  3.0s  41234 ops  0 errors  13502 ops/s".
func (p Progress) ProgressLine() string {
	line := fmt.Sprintf("%-8s %-8s %5.1fs %9d ops %6d errors %9.0f ops/s",
		p.Name, p.Phase, p.Elapsed.Seconds(), p.Measured, p.Errors, p.Rate)
	if p.Notifications > 0 {
		line += fmt.Sprintf(" %10d notifications", p.Notifications)
	}
	return line
}

// Comparison relates a zraft result to the baseline run with the same
// settings.
type Comparison struct {
	// ThroughputRatio is zraft throughput / baseline throughput (0 when the
	// baseline did nothing).
	ThroughputRatio float64
	// P50Delta and P99Delta are zraft's percentile minus the baseline's.
	P50Delta, P99Delta time.Duration
}

// Compare relates zraft to baseline.
func Compare(zraft, baseline Result) Comparison {
	c := Comparison{P50Delta: zraft.P50 - baseline.P50, P99Delta: zraft.P99 - baseline.P99}
	if baseline.Throughput > 0 {
		c.ThroughputRatio = zraft.Throughput / baseline.Throughput
	}
	return c
}

// sameShape reports whether two results ran the same workload.
func sameShape(a, b Config) bool {
	return a.Sessions == b.Sessions && a.InFlight == b.InFlight && a.ReadRatio == b.ReadRatio &&
		a.PayloadSize == b.PayloadSize && a.Keys == b.Keys
}

// pair is a zraft result and the baseline it is compared with.
type pair struct{ zraft, baseline Result }

// pairs matches every zraft result with a baseline result of the same
// workload; when there is no such baseline but exactly one baseline at all,
// it is used.
func pairs(results []Result) []pair {
	var bases []Result
	for _, r := range results {
		if r.Name == NameBaseline {
			bases = append(bases, r)
		}
	}
	var out []pair
	for _, z := range results {
		if z.Name != NameZraft {
			continue
		}
		i := slices.IndexFunc(bases, func(b Result) bool { return sameShape(z.Config, b.Config) })
		switch {
		case i >= 0:
			out = append(out, pair{z, bases[i]})
		case len(bases) == 1:
			out = append(out, pair{z, bases[0]})
		}
	}
	return out
}

// ms renders a duration in milliseconds with microsecond precision.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// signedMs renders a duration delta in milliseconds with its sign.
func signedMs(d time.Duration) string {
	return fmt.Sprintf("%+.3f", float64(d)/float64(time.Millisecond))
}

// WriteTable writes results as an aligned table, latencies in milliseconds,
// followed by one "errors" line per result that had errors and, for every
// zraft result with a baseline of the same workload, a ratio line.
func WriteTable(w io.Writer, results ...Result) error {
	// Numbers align right; names are padded to one width so that they read
	// left-aligned.
	width := len("name")
	for _, r := range results {
		width = max(width, len(r.Name))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tsessions\tin-flight\tread%%\tpayload\tops\terrors\tops/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t\n", width, "name")
	for _, r := range results {
		fmt.Fprintf(tw, "%-*s\t%d\t%d\t%.0f\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n",
			width, r.Name, r.Config.Sessions, r.Config.InFlight, r.Config.ReadRatio*100, r.Config.PayloadSize,
			r.Ops, r.Errors, r.Throughput, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench: write table: %w", err)
	}
	var b strings.Builder
	for _, r := range results {
		if len(r.ErrorsByType) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s errors:", r.Name)
		for _, k := range slices.Sorted(maps.Keys(r.ErrorsByType)) {
			fmt.Fprintf(&b, " %s=%d", k, r.ErrorsByType[k])
		}
		b.WriteByte('\n')
	}
	for _, p := range pairs(results) {
		c := Compare(p.zraft, p.baseline)
		fmt.Fprintf(&b, "zraft/baseline (%d×%d, read%% %.0f): throughput %.2fx, p50 %s ms (%s vs %s), p99 %s ms (%s vs %s)\n",
			p.zraft.Config.Sessions, p.zraft.Config.InFlight, p.zraft.Config.ReadRatio*100, c.ThroughputRatio,
			signedMs(c.P50Delta), ms(p.zraft.P50), ms(p.baseline.P50),
			signedMs(c.P99Delta), ms(p.zraft.P99), ms(p.baseline.P99))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("bench: write table: %w", err)
	}
	return nil
}

// jsonConfig, jsonResult, jsonComparison and jsonReport fix WriteJSON's
// field names; durations are microseconds.
type jsonConfig struct {
	Endpoints      []string `json:"endpoints"`
	Sessions       int      `json:"sessions"`
	InFlight       int      `json:"in_flight"`
	DurationMicros int64    `json:"duration_us"`
	WarmupMicros   int64    `json:"warmup_us"`
	PayloadSize    int      `json:"payload_size"`
	ReadRatio      float64  `json:"read_ratio"`
	Keys           int      `json:"keys"`
	TimeoutMicros  int64    `json:"timeout_us"`
}

type jsonResult struct {
	Name           string            `json:"name"`
	Ops            uint64            `json:"ops"`
	Reads          uint64            `json:"reads"`
	Writes         uint64            `json:"writes"`
	Errors         uint64            `json:"errors"`
	ErrorsByType   map[string]uint64 `json:"errors_by_type"`
	DurationMicros int64             `json:"duration_us"`
	Throughput     float64           `json:"throughput_ops_per_sec"`
	P50Micros      int64             `json:"p50_us"`
	P90Micros      int64             `json:"p90_us"`
	P99Micros      int64             `json:"p99_us"`
	P999Micros     int64             `json:"p999_us"`
	MaxMicros      int64             `json:"max_us"`
	CPUPerOpMicros float64           `json:"cpu_per_op_us"`
	Curve          []jsonPoint       `json:"curve"`
	Config         jsonConfig        `json:"config"`
}

type jsonPoint struct {
	Percentile    float64 `json:"percentile"`
	LatencyMicros int64   `json:"latency_us"`
}

type jsonComparison struct {
	Sessions        int     `json:"sessions"`
	InFlight        int     `json:"in_flight"`
	ReadRatio       float64 `json:"read_ratio"`
	ThroughputRatio float64 `json:"throughput_ratio"`
	P50DeltaMicros  int64   `json:"p50_delta_us"`
	P99DeltaMicros  int64   `json:"p99_delta_us"`
}

type jsonReport struct {
	Results     []jsonResult     `json:"results"`
	Comparisons []jsonComparison `json:"comparisons"`
}

func toJSON(r Result) jsonResult {
	byType := r.ErrorsByType
	if byType == nil {
		byType = map[string]uint64{}
	}
	endpoints := r.Config.Endpoints
	if endpoints == nil {
		endpoints = []string{}
	}
	curve := make([]jsonPoint, len(r.Curve))
	for i, p := range r.Curve {
		curve[i] = jsonPoint{Percentile: p.Percentile, LatencyMicros: p.Latency.Microseconds()}
	}
	return jsonResult{
		Curve:          curve,
		CPUPerOpMicros: float64(r.CPUPerOp) / float64(time.Microsecond),
		Name:           r.Name, Ops: r.Ops, Reads: r.Reads, Writes: r.Writes, Errors: r.Errors, ErrorsByType: byType,
		DurationMicros: r.Duration.Microseconds(), Throughput: r.Throughput,
		P50Micros: r.P50.Microseconds(), P90Micros: r.P90.Microseconds(), P99Micros: r.P99.Microseconds(),
		P999Micros: r.P999.Microseconds(), MaxMicros: r.Max.Microseconds(),
		Config: jsonConfig{
			Endpoints: endpoints, Sessions: r.Config.Sessions, InFlight: r.Config.InFlight,
			DurationMicros: r.Config.Duration.Microseconds(), WarmupMicros: r.Config.Warmup.Microseconds(),
			PayloadSize: r.Config.PayloadSize, ReadRatio: r.Config.ReadRatio, Keys: r.Config.Keys,
			TimeoutMicros: r.Config.Timeout.Microseconds(),
		},
	}
}

// WriteJSON writes results as one indented JSON object:
// {"results": [...], "comparisons": [...]}, with the field names of the
// json tags above (durations as microsecond numbers, "*_us"). comparisons
// holds one entry per zraft result that has a baseline of the same workload.
func WriteJSON(w io.Writer, results ...Result) error {
	rep := jsonReport{Results: make([]jsonResult, 0, len(results)), Comparisons: []jsonComparison{}}
	for _, r := range results {
		rep.Results = append(rep.Results, toJSON(r))
	}
	for _, p := range pairs(results) {
		c := Compare(p.zraft, p.baseline)
		rep.Comparisons = append(rep.Comparisons, jsonComparison{
			Sessions: p.zraft.Config.Sessions, InFlight: p.zraft.Config.InFlight, ReadRatio: p.zraft.Config.ReadRatio,
			ThroughputRatio: c.ThroughputRatio,
			P50DeltaMicros:  c.P50Delta.Microseconds(), P99DeltaMicros: c.P99Delta.Microseconds(),
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("bench: write json: %w", err)
	}
	return nil
}
