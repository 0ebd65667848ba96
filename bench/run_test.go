package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

// smallConfig is a run short enough for unit tests: 2 sessions × 2 in
// flight, half reads, over 8 keys.
func smallConfig() Config {
	cfg := DefaultConfig()
	cfg.Sessions, cfg.InFlight = 2, 2
	cfg.Duration, cfg.Warmup = time.Second, 200*time.Millisecond
	cfg.PayloadSize = 32
	cfg.ReadRatio = 0.5
	cfg.Keys = 8
	return cfg
}

// startCluster starts a 3-node in-memory zraft cluster running kv.
func startCluster(t *testing.T) *node.Cluster {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.InMemory = true
	newApp := func() fsm.Application {
		s, err := kv.New(kv.DefaultConfig())
		if err != nil {
			panic(err) // the default config is valid
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := node.StartLocalCluster(ctx, 3, cfg, nil, newApp, node.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// checkResult asserts what every successful small run must show.
func checkResult(t *testing.T, res Result, name string) {
	t.Helper()
	t.Logf("%s: %d ops (%d reads, %d writes), %.0f ops/s, p50 %v p99 %v max %v, errors %v",
		res.Name, res.Ops, res.Reads, res.Writes, res.Throughput, res.P50, res.P99, res.Max, res.ErrorsByType)
	if res.Name != name {
		t.Errorf("name %q, want %q", res.Name, name)
	}
	if res.Ops == 0 || res.Reads == 0 || res.Writes == 0 || res.Ops != res.Reads+res.Writes {
		t.Errorf("ops %d = reads %d + writes %d: want both kinds", res.Ops, res.Reads, res.Writes)
	}
	if res.Errors != 0 || len(res.ErrorsByType) != 0 {
		t.Errorf("errors %d %v, want none", res.Errors, res.ErrorsByType)
	}
	if !(0 < res.P50 && res.P50 <= res.P90 && res.P90 <= res.P99 && res.P99 <= res.P999 && res.P999 <= res.Max) {
		t.Errorf("percentiles out of order: p50 %v p90 %v p99 %v p99.9 %v max %v", res.P50, res.P90, res.P99, res.P999, res.Max)
	}
	if res.Duration <= 0 || res.Duration > res.Config.Duration {
		t.Errorf("measured %v, want (0, %v]", res.Duration, res.Config.Duration)
	}
	if want := float64(res.Ops) / res.Duration.Seconds(); math.Abs(res.Throughput-want) > 1e-6*want {
		t.Errorf("throughput %v, want ops/duration %v", res.Throughput, want)
	}
	// Every operation costs this process some CPU, far less than the
	// whole window's wall time.
	if res.CPUPerOp <= 0 || res.CPUPerOp*time.Duration(res.Ops) > 2*res.Duration*time.Duration(runtime.NumCPU()) {
		t.Errorf("CPU per operation %v over %d ops in %v", res.CPUPerOp, res.Ops, res.Duration)
	}
	if len(res.Curve) < 2 || res.Curve[0].Percentile != 0 || res.Curve[len(res.Curve)-1].Latency != res.Max {
		t.Errorf("curve %v does not run from the 0th percentile to the maximum %v", res.Curve, res.Max)
	}
}

func TestRunZraftMixed(t *testing.T) {
	c := startCluster(t)
	cfg := smallConfig()
	cfg.Endpoints = c.Endpoints()
	var (
		mu     sync.Mutex
		phases []string
	)
	progress := func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		phases = append(phases, p.Phase)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RunZraft(ctx, cfg, progress)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, NameZraft)
	mu.Lock()
	if len(phases) == 0 || phases[len(phases)-1] != PhaseMeasure {
		t.Errorf("progress phases %v, want reports ending in %q", phases, PhaseMeasure)
	}
	mu.Unlock()

	// The writes really happened: the store's revision counts the preload
	// (one write per key) and at least every write measured, and keys hold
	// values the measured writes stored.
	conn, err := client.Dial(ctx, cfg.Endpoints)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.Query(ctx, kv.EncodeStats())
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.DecodeStats(raw)
	if err != nil {
		t.Fatal(err)
	}
	if st.Keys != uint64(cfg.Keys) || st.Revision < uint64(cfg.Keys)+res.Writes {
		t.Errorf("store has %d keys at revision %d; want %d keys and revision >= %d", st.Keys, st.Revision, cfg.Keys, uint64(cfg.Keys)+res.Writes)
	}
	measured := 0
	for i := range cfg.Keys {
		raw, err := conn.Query(ctx, kv.EncodeGet(keyName(i)))
		if err != nil {
			t.Fatalf("get %s: %v", keyName(i), err)
		}
		v, _, err := kv.DecodeGetResult(raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != cfg.PayloadSize {
			t.Errorf("%s holds %d bytes, want %d", keyName(i), len(v), cfg.PayloadSize)
		}
		if bytes.HasPrefix(v, []byte(valuePrefix)) && bytes.Contains(v, []byte("|")) {
			measured++
		}
	}
	if measured == 0 {
		t.Errorf("no key holds a value written by the measured run")
	}
}

func TestRunZraftWritesOnly(t *testing.T) {
	c := startCluster(t)
	cfg := smallConfig()
	cfg.Endpoints = c.Endpoints()
	cfg.ReadRatio = 0
	cfg.Sessions, cfg.InFlight = 1, 1
	cfg.Warmup = 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RunZraft(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops == 0 || res.Reads != 0 || res.Writes != res.Ops || res.Errors != 0 {
		t.Errorf("ops %d reads %d writes %d errors %v: want writes only, no errors", res.Ops, res.Reads, res.Writes, res.ErrorsByType)
	}
}

func TestRunZraftNoCluster(t *testing.T) {
	// A port nobody listens on: dialing fails within the context.
	ms, err := node.LocalMembers(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := smallConfig()
	cfg.Endpoints = []string{ms[0].ClientAddr}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := RunZraft(ctx, cfg, nil); !errors.Is(err, ErrDial) {
		t.Fatalf("RunZraft without a cluster: %v, want ErrDial", err)
	}
	cfg.Endpoints = nil
	if _, err := RunZraft(ctx, cfg, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("RunZraft without endpoints: %v, want ErrConfig", err)
	}
}

func TestRunBaselineMixed(t *testing.T) {
	cfg := smallConfig()
	cfg.BaselineDir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RunBaseline(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, NameBaseline)
	// The data directory it created is gone.
	left, err := os.ReadDir(cfg.BaselineDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("baseline left %d entries in %s", len(left), cfg.BaselineDir)
	}
}

func TestRunBaselineBadDir(t *testing.T) {
	cfg := smallConfig()
	cfg.BaselineDir = "/nonexistent/zraft-bench"
	if _, err := RunBaseline(context.Background(), cfg, nil); !errors.Is(err, ErrBaseline) {
		t.Fatalf("RunBaseline in a missing dir: %v, want ErrBaseline", err)
	}
}

// The load loop with a fake system under test: counting, error
// classification, the MaxOps bound and interruption.
func TestRunnerFake(t *testing.T) {
	failEvery := 4
	var mu sync.Mutex
	calls := 0
	do := func(ctx context.Context, w int, read bool, key string, value []byte) error {
		if !strings.HasPrefix(key, "bench-") {
			return errors.New("bad key")
		}
		if !read && !bytes.HasPrefix(value, []byte(valuePrefix)) && !bytes.HasPrefix(value, []byte(preloadPrefix)) {
			return errors.New("bad value")
		}
		time.Sleep(100 * time.Microsecond)
		if !read && bytes.HasPrefix(value, []byte(preloadPrefix)) {
			return nil // preloading must succeed
		}
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n%failEvery == 0 {
			return errors.New("injected")
		}
		return nil
	}
	classify := func(err error) string { return err.Error() }

	t.Run("counts", func(t *testing.T) {
		cfg := smallConfig()
		cfg.Duration, cfg.Warmup = 300*time.Millisecond, 50*time.Millisecond
		res, err := newRunner(cfg, "fake", do, classify, nil).run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.Ops == 0 || res.Errors == 0 || len(res.ErrorsByType) != 1 || res.ErrorsByType["injected"] != res.Errors {
			t.Fatalf("ops %d errors %v: want both, all %q", res.Ops, res.ErrorsByType, "injected")
		}
	})
	t.Run("max ops", func(t *testing.T) {
		cfg := smallConfig()
		cfg.ReadRatio = 1
		cfg.Warmup = 0
		cfg.Duration = time.Minute
		cfg.MaxOps = 50
		start := time.Now()
		res, err := newRunner(cfg, "fake", do, classify, nil).run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Ops + res.Errors; got != cfg.MaxOps {
			t.Fatalf("%d operations counted, want MaxOps %d", got, cfg.MaxOps)
		}
		if res.Writes != 0 {
			t.Fatalf("%d writes with read ratio 1", res.Writes)
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("MaxOps did not end the run")
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		cfg := smallConfig()
		cfg.Warmup = 0
		cfg.Duration = time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		res, err := newRunner(cfg, "fake", do, classify, nil).run(ctx)
		if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("run: %v, want ErrInterrupted wrapping the context's error", err)
		}
		if res.Ops == 0 || res.Duration >= cfg.Duration {
			t.Fatalf("interrupted result: %d ops over %v, want the partial measurement", res.Ops, res.Duration)
		}
	})
	t.Run("interrupted while preloading", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := newRunner(smallConfig(), "fake", do, classify, nil).run(ctx)
		if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) {
			t.Fatalf("run: %v, want ErrInterrupted wrapping context.Canceled", err)
		}
	})
	t.Run("preload fails", func(t *testing.T) {
		cfg := smallConfig()
		fail := func(context.Context, int, bool, string, []byte) error { return errors.New("down") }
		_, err := newRunner(cfg, "fake", fail, classify, nil).run(context.Background())
		if !errors.Is(err, ErrPreload) {
			t.Fatalf("run: %v, want ErrPreload", err)
		}
	})
}
