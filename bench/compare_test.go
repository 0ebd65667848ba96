package bench

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

var (
	compareDuration  = flag.Duration("compare.duration", 5*time.Second, "BenchmarkCompare: measured time per run")
	compareWarmup    = flag.Duration("compare.warmup", time.Second, "BenchmarkCompare: warm-up per run")
	compareZraftOnly = flag.Bool("compare.zraft-only", false, "BenchmarkCompare: skip the baseline (to profile zraft alone)")
	compareRounds    = flag.Int("compare.rounds", 1, "BenchmarkCompare: zraft/baseline pairs per workload, run alternately; the median ratio is reported (on a shared machine, several short rounds beat one long one)")
	comparePlot      = flag.String("compare.plot", "", "BenchmarkCompare: draw every workload's latency curves into this SVG file")
	compareJSON      = flag.String("compare.json", "", "BenchmarkCompare: write every result as JSON into this file")
	comparePoller    = flag.Bool("compare.poller", node.DefaultConfig().ClientPoller, "BenchmarkCompare: the nodes' client_poller setting (to measure what it costs busy connections)")
)

// BenchmarkCompare runs the comparison of docs/benchmarks.md: for each
// workload, zraft end to end (client library → transport → actors → Raft,
// a 3-node cluster in this process on real disk) and then raw dragonboat
// with the same Raft settings (RunBaseline), and reports both with their
// ratio. One iteration takes two full runs, so use -benchtime 1x:
//
//	go test -run '^$' -bench Compare -benchtime 1x ./bench/ -args -compare.duration=10s
func BenchmarkCompare(b *testing.B) {
	var all []Result
	defer func() {
		if *comparePlot != "" && len(all) > 0 {
			var out bytes.Buffer
			if err := WritePlot(&out, all...); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(*comparePlot, out.Bytes(), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		if *compareJSON != "" && len(all) > 0 {
			var out bytes.Buffer
			if err := WriteJSON(&out, all...); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(*compareJSON, out.Bytes(), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}()
	for _, sc := range []struct {
		name               string
		sessions, inFlight int
		readRatio          float64
	}{
		{"writes-1x1", 1, 1, 0},
		{"writes-64x8", 64, 8, 0},
		{"reads-8x8", 8, 8, 1},
	} {
		b.Run(sc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Sessions, cfg.InFlight, cfg.ReadRatio = sc.sessions, sc.inFlight, sc.readRatio
			cfg.Duration, cfg.Warmup = *compareDuration, *compareWarmup
			cfg.BaselineDir = b.TempDir()
			var ratios, cpu []float64
			defer func() {
				if len(cpu) > 0 {
					slices.Sort(cpu)
					b.ReportMetric(cpu[len(cpu)/2], "cpu-ratio")
				}
				if len(ratios) > 1 {
					slices.Sort(ratios)
					b.Logf("%s: zraft/baseline throughput ratios %.2f, median %.2f", sc.name, ratios, ratios[len(ratios)/2])
					b.ReportMetric(ratios[len(ratios)/2], "median-ratio")
				}
			}()
			for range b.N * max(*compareRounds, 1) {
				z := runZraftOnDisk(b, cfg)
				all = append(all, z)
				b.ReportMetric(z.Throughput, "zraft-ops/s")
				b.ReportMetric(float64(z.P50.Microseconds()), "zraft-p50-µs")
				if *compareZraftOnly {
					b.Logf("zraft: %.0f ops/s, p50 %v, p99 %v", z.Throughput, z.P50, z.P99)
					continue
				}
				base, err := RunBaseline(context.Background(), cfg, nil)
				if err != nil {
					b.Fatal(err)
				}
				all = append(all, base)
				var out bytes.Buffer
				if err := WriteTable(&out, base, z); err != nil {
					b.Fatal(err)
				}
				b.Log("\n" + out.String())
				c := Compare(z, base)
				ratios = append(ratios, c.ThroughputRatio)
				if base.CPUPerOp > 0 {
					cpu = append(cpu, float64(z.CPUPerOp)/float64(base.CPUPerOp))
					b.Logf("CPU per operation: zraft %v, raw %v (%.2fx)", z.CPUPerOp, base.CPUPerOp, cpu[len(cpu)-1])
				}
				b.ReportMetric(base.Throughput, "raw-ops/s")
				b.ReportMetric(c.ThroughputRatio, "ratio")
				b.ReportMetric(float64(base.P50.Microseconds()), "raw-p50-µs")
			}
		})
	}
}

// runZraftOnDisk starts a 3-node kv cluster with its data on disk, runs
// RunZraft against it and stops it.
func runZraftOnDisk(b *testing.B, cfg Config) Result {
	var res Result
	onDiskCluster(b, func(endpoints []string) {
		cfg.Endpoints = endpoints
		var err error
		if res, err = RunZraft(context.Background(), cfg, nil); err != nil {
			b.Fatal(err)
		}
	})
	return res
}

var fanOutWatchers = flag.String("fanout.watchers", "0,10,100,1000", "BenchmarkFanOut: watcher counts to run, comma-separated")

// BenchmarkFanOut runs RunWatch (the kv watch fan-out workload of
// docs/benchmarks.md) on a 3-node cluster on disk for each count of
// -fanout.watchers, with the usual 8×8 writes on other keys beside it and
// 4 writes to the watched key in flight:
//
//	go test -run '^$' -bench FanOut -benchtime 1x ./bench/ -args -compare.duration=5s
func BenchmarkFanOut(b *testing.B) {
	var counts []int
	for _, f := range strings.Split(*fanOutWatchers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("-fanout.watchers: %v", err)
		}
		counts = append(counts, n)
	}
	cfg := DefaultConfig()
	cfg.Duration, cfg.Warmup = *compareDuration, *compareWarmup
	for range b.N {
		onDiskCluster(b, func(endpoints []string) {
			cfg.Endpoints = endpoints
			var all []WatchResult
			for _, n := range counts {
				c := cfg
				c.Watchers = n
				res, err := RunWatch(context.Background(), c, nil)
				if err != nil {
					b.Fatalf("%d watchers: %v", n, err)
				}
				b.Logf("%d watchers: %.0f notifications/s, hot writes %.0f/s, other writes %.0f/s, catch-up %v",
					n, res.NotificationRate, res.HotWriteRate, res.Others.Throughput, res.CatchUp)
				all = append(all, res)
			}
			var out bytes.Buffer
			if err := WriteWatchTable(&out, all...); err != nil {
				b.Fatal(err)
			}
			b.Log("\n" + out.String())
		})
	}
}

// onDiskCluster starts a 3-node kv cluster with its data on disk, calls
// run with its client endpoints and stops it.
func onDiskCluster(b *testing.B, run func(endpoints []string)) {
	ncfg := node.DefaultConfig()
	// Every client connects from 127.0.0.1: a thousand watchers plus the
	// other sessions would exceed the default per-source cap of 1,000.
	ncfg.MaxConnsPerSource = ncfg.MaxConns
	ncfg.ClientPoller = *comparePoller
	dir := b.TempDir()
	newApp := func() fsm.Application {
		s, err := kv.New(kv.DefaultConfig())
		if err != nil {
			panic(err) // the default config is valid
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Each attempt gets its own data directory: dragonboat records a
	// member's Raft address there, and a retry uses new ports.
	c, err := node.StartLocalCluster(ctx, 3, ncfg, func(cfg *node.Config) (err error) {
		cfg.DataDir, err = os.MkdirTemp(dir, "cluster")
		return err
	}, newApp, node.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			b.Errorf("close cluster: %v", err)
		}
	}()
	run(c.Endpoints())
}
