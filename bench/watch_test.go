package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRunWatchDeliversEveryChangeToEveryWatcher runs the fan-out workload
// against an in-process cluster: the watchers receive notifications while
// the other keys are written, every watcher catches up with the hot key's
// last change, and no watch is cancelled (acknowledgements keep up).
// Every watcher ends with the hot key's last change (CaughtUp); in between
// it gets at most one event per change, fewer when the leader coalesced a
// key's notifications (docs/kv.md §6).
func TestRunWatchDeliversEveryChangeToEveryWatcher(t *testing.T) {
	c := startCluster(t)
	cfg := smallConfig()
	cfg.Endpoints = c.Endpoints()
	cfg.ReadRatio = 0
	cfg.Watchers = 6
	cfg.HotInFlight = 2
	var lines []string
	res, err := RunWatch(context.Background(), cfg, func(p Progress) { lines = append(lines, p.ProgressLine()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hot writes %d, notifications %d, catch-up %v, other ops %d", res.HotWrites, res.Notifications, res.CatchUp, res.Others.Ops)
	if res.Others.Ops == 0 || res.Others.Errors != 0 {
		t.Fatalf("other keys: %d ops, %d errors", res.Others.Ops, res.Others.Errors)
	}
	if res.HotWrites == 0 || res.Notifications == 0 {
		t.Fatalf("hot writes %d, notifications %d", res.HotWrites, res.Notifications)
	}
	if !res.CaughtUp || res.CancelledWatches != 0 || res.LostWatches != 0 {
		t.Fatalf("caught up %v (after %v), cancelled watches %d, lost %d", res.CaughtUp, res.CatchUp, res.CancelledWatches, res.LostWatches)
	}
	// Each hot write in the window notifies every watcher at most once
	// (coalescing may skip some); writes near the window's edges may be
	// notified on either side of it.
	want := float64(res.HotWrites * uint64(cfg.Watchers))
	if got := float64(res.Notifications); got < float64(cfg.Watchers) || got > 1.3*want+float64(cfg.Watchers*cfg.HotInFlight*2) {
		t.Fatalf("%v notifications for %d hot writes to %d watchers", got, res.HotWrites, cfg.Watchers)
	}
	if res.Resyncs > res.Notifications {
		t.Fatalf("%d resyncs among %d notifications", res.Resyncs, res.Notifications)
	}
	if len(lines) > 0 && !strings.Contains(strings.Join(lines, "\n"), "notifications") {
		t.Errorf("progress lines never mention notifications:\n%s", strings.Join(lines, "\n"))
	}

	var buf bytes.Buffer
	ref := WatchResult{Others: Result{Throughput: res.Others.Throughput * 2}}
	if err := WriteWatchTable(&buf, ref, res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "other keys with 6 watchers: 0.50x the write rate without watchers") {
		t.Errorf("table:\n%s", buf.String())
	}
}
