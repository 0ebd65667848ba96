package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLeaderKillGap measures failover as clients see it: -chaos.gap-trials
// times, the leader of the process cluster is killed with SIGKILL while the
// workload runs, and the test prints the time until the two survivors agree
// on a new leader and the longest time without any successful call (from
// the kill on), then the medians. The killed member restarts between
// trials. Skipped unless -chaos.gap-trials is set.
func TestLeaderKillGap(t *testing.T) {
	trials := *flagGapTrials
	if trials <= 0 {
		t.Skip("measurement: run with -chaos.gap-trials=N (see docs/benchmarks.md)")
	}
	if d, ok := t.Deadline(); ok && time.Until(d) < time.Duration(trials)*20*time.Second+time.Minute {
		t.Fatalf("%d trials need about %v: add -timeout", trials, time.Duration(trials)*20*time.Second+time.Minute)
	}
	s := seed(t)
	c := startProcCluster(t)
	w := startWorkload(c.endpoints(), *flagSessions, *flagIdle, s)
	stopped := false
	defer func() {
		if !stopped {
			w.stop()
		}
	}()
	waitSessions(t, w, 30*time.Second)

	var gaps, leaderless, stalls []time.Duration
	var lines []string
	for i := 0; i < trials; i++ {
		time.Sleep(3 * time.Second) // steady state before each kill
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		l, err := c.waitLeader(ctx, nil)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := c.kill(l); err != nil {
			cancel()
			t.Fatal(err)
		}
		if _, err := c.waitLeader(ctx, l); err != nil {
			cancel()
			t.Fatal(err)
		}
		agreed := time.Since(t0)
		time.Sleep(time.Until(t0.Add(4 * time.Second)))
		if err := c.start(l, 0); err != nil {
			cancel()
			t.Fatal(err)
		}
		time.Sleep(time.Until(t0.Add(8 * time.Second)))
		gap := maxGap(w.h.sortedSuccesses(), t0, t0.Add(8*time.Second))
		stall, who := w.h.stall(t0, t0.Add(8*time.Second), *flagSessions)
		if err := c.waitCaughtUp(ctx, l); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
		gaps, leaderless, stalls = append(gaps, gap), append(leaderless, agreed), append(stalls, stall)
		lines = append(lines, fmt.Sprintf("  trial %d: killed leader %d; no agreed leader %.2fs, client gap %.2fs (gap - no leader %.2fs), longest session stall %.2fs (session %d)",
			i+1, l.id, agreed.Seconds(), gap.Seconds(), (gap-agreed).Seconds(), stall.Seconds(), who))
	}
	h := w.stop()
	stopped = true
	for _, d := range c.takeDeaths() {
		t.Errorf("member %d died unexpectedly: %v", d.id, d.err)
	}
	if len(h.lost) > 0 {
		t.Errorf("%d sessions lost:%s", len(h.lost), errSummary(h.lost, h.start, 20))
	}
	if len(h.errs) > 0 {
		t.Errorf("%d calls failed:%s", len(h.errs), errSummary(h.errs, h.start, 20))
	}
	t.Logf("leader kill, %d trials:\n%s\nmedian: no agreed leader %.2fs, client-visible gap %.2fs, longest session stall %.2fs",
		trials, strings.Join(lines, "\n"), median(leaderless).Seconds(), median(gaps).Seconds(), median(stalls).Seconds())
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
