package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/codec"
)

func synthetic(name string, sessions int, ops uint64, p50 time.Duration) Result {
	cfg := DefaultConfig()
	cfg.Sessions = sessions
	return Result{
		Name: name, Ops: ops, Writes: ops, Duration: 10 * time.Second,
		Throughput: float64(ops) / 10,
		P50:        p50, P90: 2 * p50, P99: 3 * p50, P999: 4 * p50, Max: 5 * p50,
		ErrorsByType: map[string]uint64{}, Config: cfg,
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, change := range map[string]func(*Config){
		"no sessions":       func(c *Config) { c.Sessions = 0 },
		"too many sessions": func(c *Config) { c.Sessions = MaxSessions + 1 },
		"no in-flight":      func(c *Config) { c.InFlight = 0 },
		"too many workers":  func(c *Config) { c.Sessions, c.InFlight = 64, 64 },
		"no duration":       func(c *Config) { c.Duration = 0 },
		"long duration":     func(c *Config) { c.Duration = MaxDuration + 1 },
		"negative warm-up":  func(c *Config) { c.Warmup = -1 },
		"negative payload":  func(c *Config) { c.PayloadSize = -1 },
		"huge payload":      func(c *Config) { c.PayloadSize = MaxPayloadSize + 1 },
		"read ratio > 1":    func(c *Config) { c.ReadRatio = 1.5 },
		"read ratio < 0":    func(c *Config) { c.ReadRatio = -0.1 },
		"read ratio NaN":    func(c *Config) { c.ReadRatio = math.NaN() },
		"no keys":           func(c *Config) { c.Keys = 0 },
		"too many keys":     func(c *Config) { c.Keys = MaxKeys + 1 },
		"no timeout":        func(c *Config) { c.Timeout = 0 },
		"no max ops":        func(c *Config) { c.MaxOps = 0 },
	} {
		c := DefaultConfig()
		change(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) || !strings.HasPrefix(err.Error(), "bench: ") {
			t.Errorf("%s: Validate = %v, want ErrConfig", name, err)
		}
	}
}

func TestCompare(t *testing.T) {
	z := synthetic(NameZraft, 8, 30000, 2500*time.Microsecond)
	b := synthetic(NameBaseline, 8, 40000, 2000*time.Microsecond)
	c := Compare(z, b)
	if c.ThroughputRatio != 0.75 || c.P50Delta != 500*time.Microsecond || c.P99Delta != 1500*time.Microsecond {
		t.Fatalf("Compare = %+v, want ratio 0.75, p50 +500µs, p99 +1.5ms", c)
	}
	if got := Compare(z, Result{}); got.ThroughputRatio != 0 {
		t.Fatalf("ratio against an empty baseline = %v, want 0", got.ThroughputRatio)
	}
}

func TestWriteTable(t *testing.T) {
	b := synthetic(NameBaseline, 8, 40000, 2000*time.Microsecond)
	z := synthetic(NameZraft, 8, 30000, 2500*time.Microsecond)
	z.Errors = 3
	z.ErrorsByType = map[string]uint64{"timeout": 2, "overloaded": 1}
	var buf bytes.Buffer
	if err := WriteTable(&buf, b, z); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Log("\n" + out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want header, 2 rows, errors, ratios", len(lines))
	}
	header := strings.Fields(lines[0])
	want := []string{"name", "sessions", "in-flight", "read%", "payload", "ops", "errors", "ops/s",
		"p50", "ms", "p90", "ms", "p99", "ms", "p99.9", "ms", "max", "ms"}
	if strings.Join(header, " ") != strings.Join(want, " ") {
		t.Errorf("header %q", lines[0])
	}
	// Columns are aligned: every row as long as the header.
	for _, l := range lines[1:3] {
		if len(l) != len(lines[0]) {
			t.Errorf("row %q not aligned with header %q", l, lines[0])
		}
	}
	if f := strings.Fields(lines[2]); f[0] != "zraft" || f[5] != "30000" || f[6] != "3" || f[7] != "3000" || f[8] != "2.500" || f[12] != "12.500" {
		t.Errorf("zraft row %q", lines[2])
	}
	if lines[3] != "zraft errors: overloaded=1 timeout=2" {
		t.Errorf("errors line %q", lines[3])
	}
	if want := "zraft/baseline (8×8, read% 0): throughput 0.75x, p50 +0.500 ms (2.500 vs 2.000), p99 +1.500 ms (7.500 vs 6.000)"; lines[4] != want {
		t.Errorf("ratio line\n got %q\nwant %q", lines[4], want)
	}

	// No baseline, no ratio line; a baseline of another shape is not
	// compared when there are several.
	buf.Reset()
	other := synthetic(NameBaseline, 64, 1, time.Millisecond)
	if err := WriteTable(&buf, z, other, synthetic(NameBaseline, 32, 1, time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "zraft/baseline") {
		t.Errorf("ratio line without a matching baseline:\n%s", buf.String())
	}
	buf.Reset()
	if err := WriteTable(&buf, z, other); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "zraft/baseline (8×8, read% 0): throughput 30000.00x") {
		t.Errorf("the only baseline is not compared:\n%s", buf.String())
	}
}

func TestWriteJSON(t *testing.T) {
	b := synthetic(NameBaseline, 8, 40000, 2000*time.Microsecond)
	z := synthetic(NameZraft, 8, 30000, 2500*time.Microsecond)
	z.Errors, z.ErrorsByType = 1, map[string]uint64{"timeout": 1}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, b, z); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Results []map[string]any `json:"results"`
		Compare []map[string]any `json:"comparisons"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if len(got.Results) != 2 || len(got.Compare) != 1 {
		t.Fatalf("%d results, %d comparisons:\n%s", len(got.Results), len(got.Compare), buf.String())
	}
	zr := got.Results[1]
	for k, want := range map[string]any{
		"name": "zraft", "ops": 30000.0, "errors": 1.0, "throughput_ops_per_sec": 3000.0,
		"p50_us": 2500.0, "p90_us": 5000.0, "p99_us": 7500.0, "p999_us": 10000.0, "max_us": 12500.0,
		"duration_us": 10e6, "reads": 0.0, "writes": 30000.0,
	} {
		if zr[k] != want {
			t.Errorf("%s = %v, want %v", k, zr[k], want)
		}
	}
	if e := zr["errors_by_type"].(map[string]any); e["timeout"] != 1.0 {
		t.Errorf("errors_by_type %v", e)
	}
	cfg := zr["config"].(map[string]any)
	for k, want := range map[string]any{"sessions": 8.0, "in_flight": 8.0, "duration_us": 10e6, "warmup_us": 1e6,
		"payload_size": 100.0, "read_ratio": 0.0, "keys": 1000.0} {
		if cfg[k] != want {
			t.Errorf("config %s = %v, want %v", k, cfg[k], want)
		}
	}
	c := got.Compare[0]
	if c["throughput_ratio"] != 0.75 || c["p50_delta_us"] != 500.0 || c["p99_delta_us"] != 1500.0 {
		t.Errorf("comparison %v", c)
	}
}

func TestProgressLine(t *testing.T) {
	p := Progress{Name: NameZraft, Phase: PhaseMeasure, Elapsed: 3 * time.Second, Measured: 41234, Errors: 2, Rate: 13502.4}
	line := p.ProgressLine()
	for _, want := range []string{"zraft", "measure", "3.0s", "41234 ops", "2 errors", "13502 ops/s"} {
		if !strings.Contains(line, want) {
			t.Errorf("%q lacks %q", line, want)
		}
	}
}

func TestErrorTypes(t *testing.T) {
	for err, want := range map[error]string{
		&client.AppError{Code: 1}:                                         "app:key not found",
		fmt.Errorf("x: %w", &client.AppError{Code: 99}):                   "app:application error 99",
		&client.ServerError{Code: codec.CodeOverloaded}:                   "overloaded",
		fmt.Errorf("%w: %w", client.ErrOutcomeUnknown, client.ErrTimeout): "outcome_unknown",
		client.ErrTimeout: "timeout",
		fmt.Errorf("%w: %w", client.ErrSessionExpired, client.ErrTimeout): "session_expired",
		client.ErrClosed: "closed",
		fmt.Errorf("client: query withdrawn: %w", context.DeadlineExceeded): "deadline",
		errors.New("something else"):                                        "other",
	} {
		if got := zraftErrorType(err); got != want {
			t.Errorf("zraftErrorType(%v) = %q, want %q", err, got, want)
		}
	}
	if got := baselineErrorType(fmt.Errorf("wrapped: %w", errBaselineNotFound)); got != "app:key not found" {
		t.Errorf("baselineErrorType(not found) = %q", got)
	}
}
