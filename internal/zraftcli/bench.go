package zraftcli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/zraft/zraft/bench"
)

const benchSynopsis = `zraft bench [flags]

Runs N sessions x M in-flight operations against the cluster for a duration
(kv sets of --payload bytes, with --read-ratio of them linearizable kv gets),
prints a progress line while it runs, then a table (or JSON with --json):
throughput, latency p50/p90/p99/p99.9/max, errors by type; --plot FILE.svg
also draws the latency percentile curves. --read-ratio gives etcd-style mixed
workloads (0.5, 0.95, ...). With --watchers N it measures fan-out instead: N
sessions watch one hot key that one more session writes (--hot-inflight
writes in flight) while the usual workload runs on the other keys, once
without the watchers and once with them, and prints notifications received
per second, the hot key's write rate and the other keys' rate in both runs. With --baseline it
also measures raw dragonboat (SyncPropose/SyncRead on a 3-replica shard in this
process, with zraft's Raft settings, on disk) in the same run and prints
zraft's figures as ratios to it.

With --keepalive, --sessions N opens N lean keep-alive-only sessions instead
(one connection each, the wire protocol spoken directly), has each send a
keep-alive every interval for --duration, and reports the keep-alive answer
p50/p99, keep-alives unanswered within 1 s, and, from the members' /metrics
(--metrics-urls), the leader's RSS, bytes per session and CPU.`

func benchCommand(ctx context.Context, args []string, e env) error {
	fs := newFlags("bench", benchSynopsis, e)
	var c common
	c.register(fs, e)
	d := bench.DefaultConfig()
	cfg := d
	fs.IntVar(&cfg.Sessions, "sessions", d.Sessions, "client sessions (N)")
	fs.IntVar(&cfg.InFlight, "inflight", d.InFlight, "operations in flight per session (M)")
	fs.DurationVar(&cfg.Duration, "duration", d.Duration, "how long to measure")
	fs.DurationVar(&cfg.Warmup, "warmup", d.Warmup, "how long to run before measuring")
	fs.IntVar(&cfg.PayloadSize, "payload", d.PayloadSize, "bytes per written value")
	fs.Float64Var(&cfg.ReadRatio, "read-ratio", d.ReadRatio, "share of operations that are linearizable reads (0 to 1)")
	fs.IntVar(&cfg.Keys, "keys", d.Keys, "size of the key space")
	fs.DurationVar(&cfg.Timeout, "op-timeout", d.Timeout, "bound on each operation")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "also measure raw dragonboat in this process")
	fs.StringVar(&cfg.BaselineDir, "baseline-dir", "", "where the baseline keeps its (temporary) data; default the temp dir")
	keepAlive := fs.Bool("keepalive", false, "keep-alive-only sessions: --sessions N lean sessions that only send keep-alives")
	metricsURLs := fs.String("metrics-urls", "", "with --keepalive: the members' /metrics URLs, comma-separated (leader RSS and CPU)")
	openRate := fs.Int("open-rate", bench.DefaultSessionsConfig().OpenRate, "with --keepalive: sessions opened per second")
	fs.IntVar(&cfg.Watchers, "watchers", 0, "fan-out workload: this many sessions watch one hot key written by one more session, beside the usual workload; run once without and once with them")
	fs.IntVar(&cfg.HotInFlight, "hot-inflight", d.HotInFlight, "with --watchers: writes to the hot key in flight")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	plotFile := fs.String("plot", "", "also draw the latency percentile curves (zraft and baseline side by side) as an SVG `file`")
	quiet := fs.Bool("quiet", false, "no progress line")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: bench takes no arguments", errUsage)
	}
	cfg.Endpoints = c.endpointList()
	if err := c.prepare(e); err != nil {
		return err
	}
	defer c.release()
	cfg.TLS = c.tls
	if *keepAlive {
		return keepAliveBench(ctx, e, cfg, *metricsURLs, *openRate, *asJSON, *quiet)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	progress := func(p bench.Progress) {
		if !*quiet {
			fmt.Fprintf(e.stderr, "\r%-100s", p.ProgressLine())
		}
	}
	endLine := func() {
		if !*quiet {
			fmt.Fprintln(e.stderr)
		}
	}
	if cfg.Watchers > 0 {
		return watchBench(ctx, cfg, progress, endLine, *asJSON, e)
	}
	var results []bench.Result
	res, err := bench.RunZraft(ctx, cfg, progress)
	endLine()
	if err != nil {
		return fmt.Errorf("zraft run: %w", err)
	}
	results = append(results, res)
	if cfg.Baseline {
		res, err := bench.RunBaseline(ctx, cfg, progress)
		endLine()
		if err != nil {
			return fmt.Errorf("baseline run: %w", err)
		}
		results = append(results, res)
	}
	if *plotFile != "" {
		if err := writePlotFile(*plotFile, results); err != nil {
			return err
		}
	}
	if *asJSON {
		return bench.WriteJSON(e.stdout, results...)
	}
	return bench.WriteTable(e.stdout, results...)
}

// keepAliveBench runs `zraft bench --keepalive`.
func keepAliveBench(ctx context.Context, e env, cfg bench.Config, urls string, openRate int, asJSON, quiet bool) error {
	kc := bench.DefaultSessionsConfig()
	kc.Endpoints, kc.TLS, kc.Sessions, kc.Duration, kc.OpenRate = cfg.Endpoints, cfg.TLS, cfg.Sessions, cfg.Duration, openRate
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			kc.MetricsURLs = append(kc.MetricsURLs, u)
		}
	}
	if err := kc.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	res, err := bench.RunSessions(ctx, kc, func(line string) {
		if !quiet {
			fmt.Fprintf(e.stderr, "\r%-100s", line)
		}
	})
	if !quiet {
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return fmt.Errorf("keep-alive run: %w", err)
	}
	if asJSON {
		return bench.WriteSessionsJSON(e.stdout, res)
	}
	return bench.WriteSessionsTable(e.stdout, res)
}

// writePlotFile draws results' latency curves into the SVG file path.
func writePlotFile(path string, results []bench.Result) error {
	var b bytes.Buffer
	if err := bench.WritePlot(&b, results...); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	return nil
}

// watchBench runs the fan-out workload without and with watchers and
// prints both.
func watchBench(ctx context.Context, cfg bench.Config, progress func(bench.Progress), endLine func(), asJSON bool, e env) error {
	var results []bench.WatchResult
	for _, n := range []int{0, cfg.Watchers} {
		c := cfg
		c.Watchers = n
		res, err := bench.RunWatch(ctx, c, progress)
		endLine()
		if err != nil {
			return fmt.Errorf("watch run with %d watchers: %w", n, err)
		}
		results = append(results, res)
	}
	if asJSON {
		return bench.WriteWatchJSON(e.stdout, results...)
	}
	return bench.WriteWatchTable(e.stdout, results...)
}
