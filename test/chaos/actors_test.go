package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/node"
	"github.com/zraft/zraft/supervision"
)

// actorKinds are the node actors the in-process nemesis panics. The gateway
// is left out: it only handles frames that fail to decode, which this
// workload never sends (test/failover_test.go covers its restart).
var actorKinds = []string{"sessions", "session", "keepalive", "raft", "dispatcher"}

// pastLimit is how many panics a burst injects: more than the supervisor's
// 10 restarts within 10 s, so the actor is stopped and the node's root
// starts it afresh.
const pastLimit = 12

// actorCluster is three nodes in this process, each with its own fault
// injector so that a burst hits one node's actor.
type actorCluster struct {
	nodes  []*node.Node
	faults []*supervision.Faults
}

func startActorCluster(t *testing.T) *actorCluster {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *flagDebugLog != "" {
		f, err := os.Create(*flagDebugLog)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		quiet = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
		debugLog = quiet
		t.Cleanup(func() { debugLog = nil })
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var members []node.Member
		if members, err = node.LocalMembers(3, 0, 0); err != nil {
			t.Fatal(err)
		}
		ac := &actorCluster{}
		clusterID := node.NewClusterID()
		for _, m := range members {
			cfg := node.DefaultConfig()
			cfg.ID, cfg.Members, cfg.InMemory, cfg.ClusterID = m.ID, members, true, clusterID
			cfg.KeepAliveFastPath, cfg.ClientPoller = *flagFastPath, *flagPoller
			f := supervision.NewFaults()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			var n *node.Node
			n, err = node.Start(ctx, cfg, newKV(), node.WithFaultInjection(f), node.WithLogger(quiet))
			cancel()
			if err != nil {
				break
			}
			ac.nodes, ac.faults = append(ac.nodes, n), append(ac.faults, f)
		}
		if err == nil {
			t.Cleanup(ac.close)
			if _, err := ac.waitLeader(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			return ac
		}
		ac.close()
		if !node.IsAddrInUse(err) {
			break
		}
	}
	t.Fatal(err)
	return nil
}

func (ac *actorCluster) close() {
	for _, n := range ac.nodes {
		_ = n.Close()
	}
}

func (ac *actorCluster) endpoints() []string {
	out := make([]string, len(ac.nodes))
	for i, n := range ac.nodes {
		out[i] = n.ClientAddr()
	}
	return out
}

// waitLeader returns the index of the node every node names as leader.
func (ac *actorCluster) waitLeader(d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		id, _, ok := ac.nodes[0].Leader()
		agree := ok
		for _, n := range ac.nodes[1:] {
			l, _, ok := n.Leader()
			agree = agree && ok && l == id
		}
		if agree {
			for i, n := range ac.nodes {
				if n.ID() == id {
					return i, nil
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("no agreed leader within %v", d)
}

// TestChaosActors panics random actors of an in-process cluster, in small
// numbers and in bursts past the restart limit, while the workload runs,
// and checks the same properties as the process suite.
func TestChaosActors(t *testing.T) {
	s := seed(t)
	rng := rand.New(rand.NewPCG(uint64(s), 7))
	pool := actorKinds
	if *flagActorKinds != "" {
		pool = strings.Split(*flagActorKinds, ",")
		for _, k := range pool {
			if !slices.Contains(actorKinds, k) {
				t.Fatalf("-chaos.actor-kinds: unknown kind %q (want some of %v)", k, actorKinds)
			}
		}
	}
	ac := startActorCluster(t)
	w := startWorkload(ac.endpoints(), *flagSessions, *flagIdle, s)
	stopped := false
	defer func() {
		if !stopped {
			w.stop()
		}
	}()
	waitSessions(t, w, 30*time.Second)

	var faults []fault
	// armed counts the panics armed per node and kind; a kind is armed
	// again only once its earlier panics have all fired, so that no rule
	// outlives the run (rarely messaged actors take a while).
	armed := make([]map[string]int, len(ac.nodes))
	for i := range armed {
		armed[i] = map[string]int{}
	}
	pending := func() []string {
		var out []string
		for i, f := range ac.faults {
			for _, k := range actorKinds {
				if n := armed[i][k] - f.Fired(k); n > 0 {
					out = append(out, fmt.Sprintf("%d %s panics on member %d", n, k, ac.nodes[i].ID()))
				}
			}
		}
		return out
	}
	end := time.Now().Add(*flagActorDur)
	for i := 0; time.Now().Before(end); i++ {
		time.Sleep(time.Duration(700+rng.IntN(600)) * time.Millisecond)
		li, err := ac.waitLeader(20 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		idx := li
		if rng.IntN(3) == 0 {
			idx = rng.IntN(len(ac.nodes))
		}
		kind := pool[rng.IntN(len(pool))]
		if armed[idx][kind] > ac.faults[idx].Fired(kind) {
			continue
		}
		count := 1 + rng.IntN(3)
		if i%4 == 3 {
			count = pastLimit
		}
		armed[idx][kind] += count
		ac.faults[idx].PanicOn(kind, count, nil)
		f := fault{kind: kind, member: ac.nodes[idx].ID(), wasLeader: idx == li, start: time.Now(),
			note: fmt.Sprintf("%d panics", count)}
		f.end = f.start
		faults = append(faults, f)
	}
	// Let the armed panics fire while the workload still runs.
	for wait := time.Now().Add(5 * time.Second); len(pending()) > 0 && time.Now().Before(wait); {
		time.Sleep(100 * time.Millisecond)
	}
	if p := pending(); len(p) > 0 {
		t.Logf("still armed at the end (they may eat messages of the final checks): %s", strings.Join(p, ", "))
	}
	time.Sleep(quiet)
	h := w.stop()
	stopped = true
	runEnd := time.Now()

	fired := map[string]int{}
	for _, f := range ac.faults {
		for _, k := range actorKinds {
			fired[k] += f.Fired(k)
		}
	}
	var problems []string
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	final, err := readLedger(ctx, ac.endpoints())
	if err != nil {
		problems = append(problems, "final ledger read: "+err.Error())
		for _, n := range ac.nodes {
			id, term, ok := n.Leader()
			dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, derr := readLedger(dctx, []string{n.ClientAddr()})
			dcancel()
			problems = append(problems, fmt.Sprintf("  member %d (raft leader %d term %d known %v): session on it alone: %v",
				n.ID(), id, term, ok, derr))
		}
	}
	replicaLedger, rp := converge(ctx, ac.nodes)
	problems = append(problems, rp...)
	if err == nil && len(rp) == 0 && replicaLedger != final {
		problems = append(problems, fmt.Sprintf("replicas hold ledger %d, the cluster answered %d", replicaLedger, final))
	}
	lin, linStats := checkLinearizable(h, "zraft-chaos-actors-")
	problems = append(problems, lin...)
	if err == nil {
		problems = append(problems, checkLedger(h, final)...)
	}
	if len(h.lost) > 0 {
		problems = append(problems, fmt.Sprintf("%d sessions lost:%s", len(h.lost), errSummary(h.lost, h.start, 20)))
	}
	if len(h.errs) > 0 {
		problems = append(problems, fmt.Sprintf("%d calls failed:%s", len(h.errs), errSummary(h.errs, h.start, 20)))
	}
	var firedParts []string
	kinds := append([]string(nil), actorKinds...)
	sort.Strings(kinds)
	for _, k := range kinds {
		firedParts = append(firedParts, fmt.Sprintf("%s %d", k, fired[k]))
	}
	t.Logf("panics injected: %s", strings.Join(firedParts, ", "))
	report(t, h, faults, nil, runEnd, linStats, final)
	for _, p := range problems {
		t.Error(p)
	}
}
