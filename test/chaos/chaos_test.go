package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

func seed(t *testing.T) int64 {
	s := *flagSeed
	if s == 0 {
		s = time.Now().UnixNano()
	}
	t.Logf("seed %d (rerun with -chaos.seed=%d)", s, s)
	return s
}

// TestChaosProcesses runs the workload against three cmd/node processes
// while the nemesis cycles through its faults, and checks the outcome.
// -chaos.runs, -chaos.duration, -chaos.faults and -chaos.target shape it.
func TestChaosProcesses(t *testing.T) {
	kinds := strings.Split(*flagFaults, ",")
	for _, k := range kinds {
		switch k {
		case faultKill, faultStop, faultPartition, faultConnKill, faultSkew:
		default:
			t.Fatalf("-chaos.faults: unknown fault kind %q", k)
		}
	}
	// Each run takes its duration plus about a minute of setup and checks.
	need := time.Duration(*flagRuns) * (*flagDuration + 90*time.Second)
	if d, ok := t.Deadline(); ok && time.Until(d) < need {
		t.Fatalf("%d runs of %v need about %v; go test's -timeout leaves %v: add -timeout %v",
			*flagRuns, *flagDuration, need.Round(time.Minute), time.Until(d).Round(time.Second), (need + 5*time.Minute).Round(time.Minute))
	}
	var summaries []string
	for run := 1; run <= *flagRuns; run++ {
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			summaries = append(summaries, chaosRun(t, kinds))
		})
	}
	if len(summaries) > 1 {
		t.Logf("all runs:\n%s", strings.Join(summaries, "\n"))
	}
}

// chaosRun is one run: start, attack, check. It returns a one-line summary.
func chaosRun(t *testing.T, kinds []string) string {
	s := seed(t)
	c := startProcCluster(t)
	fw := newFirewall()
	defer fw.close()
	if !fw.ok {
		t.Logf("partition faults will be skipped: %s", fw.why)
	}
	mon := startMonitor(c)
	defer mon.close()
	w := startWorkload(c.endpoints(), *flagSessions, *flagIdle, s)
	stopped := false
	defer func() {
		if !stopped {
			w.stop()
		}
	}()

	// Let every session start before the first fault.
	waitSessions(t, w, 30*time.Second)
	n := &nemesis{t: t, c: c, fw: fw, rng: rand.New(rand.NewPCG(uint64(s), 99)), target: *flagTarget}
	n.run(kinds, *flagDuration)
	h := w.stop()
	stopped = true
	end := time.Now()
	mon.close()

	var problems []string
	problems = append(problems, n.problems...)
	for _, d := range c.takeDeaths() {
		problems = append(problems, fmt.Sprintf("member %d died unexpectedly at %s: %v; log tail:\n%s",
			d.id, d.at.Format(tsFormat), d.err, c.member(d.id).logTail(2000)))
	}

	// Convergence as the members report it, then the final ledger through
	// a linearizable read.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.waitConverged(ctx); err != nil {
		problems = append(problems, err.Error())
	}
	final, err := readLedger(ctx, c.endpoints())
	if err != nil {
		problems = append(problems, "final ledger read: "+err.Error())
	}
	// Every replica's full state: stop the processes and open their data
	// directories in this process.
	c.stopAll()
	for _, d := range c.takeDeaths() {
		problems = append(problems, fmt.Sprintf("member %d died during shutdown: %v", d.id, d.err))
	}
	replicaLedger, rp := reopen(ctx, c)
	problems = append(problems, rp...)
	if err == nil && len(rp) == 0 && replicaLedger != final {
		problems = append(problems, fmt.Sprintf("replicas hold ledger %d, the cluster answered %d", replicaLedger, final))
	}

	lin, linStats := checkLinearizable(h, "zraft-chaos-out-")
	problems = append(problems, lin...)
	if err == nil {
		problems = append(problems, checkLedger(h, final)...)
	}
	if len(h.lost) > 0 {
		problems = append(problems, fmt.Sprintf("%d sessions lost while a majority was healthy:%s", len(h.lost), errSummary(h.lost, h.start, 20)))
	}
	if len(h.errs) > 0 {
		problems = append(problems, fmt.Sprintf("%d calls failed while a majority was healthy:%s", len(h.errs), errSummary(h.errs, h.start, 20)))
	}

	summary := report(t, h, n.faults, mon, end, linStats, final)
	for _, p := range problems {
		t.Error(p)
	}
	return fmt.Sprintf("%s; %d sessions lost, %d errors, %d problems", summary, len(h.lost), len(h.errs), len(problems))
}

// waitSessions waits until each session has completed a call.
func waitSessions(t *testing.T, w *workload, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		w.h.mu.Lock()
		n := w.h.total
		w.h.mu.Unlock()
		if n >= 2**flagSessions {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("workload slow to start")
}

func readLedger(ctx context.Context, endpoints []string) (int64, error) {
	conn, err := client.Dial(ctx, endpoints)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	res, err := conn.Query(ctx, kv.EncodeGet(ledgerKey))
	if appErrIs(err, kv.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	// The ledger is read as an increment of zero would see it: as a
	// decimal string.
	v, _, err := kv.DecodeGetResult(res)
	if err != nil {
		return 0, err
	}
	var n int64
	_, err = fmt.Sscan(string(v), &n)
	return n, err
}

// report logs the run's table: per fault, the longest time without a
// successful call and without an agreed leader, then the longest of each per
// kind. It returns a one-line summary.
func report(t *testing.T, h *history, faults []fault, mon *monitor, end time.Time, linStats string, final int64) string {
	succ := h.sortedSuccesses()
	type agg struct {
		n                      int
		gap, stall, leaderless time.Duration
	}
	byKind := map[string]*agg{}
	var b strings.Builder
	fmt.Fprintf(&b, "faults (gap: longest time without any successful call; stall: longest time one busy session went without one;\n"+
		"no leader: longest time the healthy members agreed on no live leader; each from the fault to the next fault):\n")
	for i := range faults {
		f := &faults[i]
		to := end
		if i+1 < len(faults) {
			to = faults[i+1].start
		}
		f.gap = maxGap(succ, f.start, to)
		f.stall, _ = h.stall(f.start, to, *flagSessions)
		faulty := f.member
		if f.kind == faultConnKill || f.kind == faultSkew {
			// The member stays a healthy voter (a skewed member's leader
			// changes are measured like any other).
			faulty = 0
		}
		if mon != nil {
			f.leaderless = mon.leaderless(faulty, f.start, to)
		}
		key := f.kind
		if f.wasLeader {
			key += "(leader)"
		}
		a := byKind[key]
		if a == nil {
			a = &agg{}
			byKind[key] = a
		}
		a.n++
		a.gap, a.stall, a.leaderless = max(a.gap, f.gap), max(a.stall, f.stall), max(a.leaderless, f.leaderless)
		fmt.Fprintf(&b, "  +%6.1fs %-9s member %d leader=%-5v gap %5.2fs  stall %5.2fs  no leader %5.2fs %s\n",
			f.start.Sub(h.start).Seconds(), f.kind, f.member, f.wasLeader, f.gap.Seconds(), f.stall.Seconds(), f.leaderless.Seconds(), f.note)
	}
	keys := make([]string, 0, len(byKind))
	for k := range byKind {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(&b, "longest per fault kind:\n")
	var parts []string
	for _, k := range keys {
		a := byKind[k]
		fmt.Fprintf(&b, "  %-20s x%-2d gap %5.2fs  stall %5.2fs  no leader %5.2fs\n", k, a.n, a.gap.Seconds(), a.stall.Seconds(), a.leaderless.Seconds())
		parts = append(parts, fmt.Sprintf("%s gap %.2fs stall %.2fs", k, a.gap.Seconds(), a.stall.Seconds()))
	}
	h.mu.Lock()
	fmt.Fprintf(&b, "workload: %d successful calls, %d sessions dialled, %d sessions lost, %d errors; ledger final %d (acknowledged %d, unknown %d)\n",
		h.total, h.dials, len(h.lost), len(h.errs), final, h.acked, h.unknown)
	h.mu.Unlock()
	fmt.Fprintf(&b, "linearizability: %s", linStats)
	t.Log(b.String())
	return strings.Join(parts, ", ")
}
