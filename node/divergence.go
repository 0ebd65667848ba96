package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zraft/zraft/fsm/raftsm"
	"github.com/zraft/zraft/node/httpapi"
)

// Replica divergence detection. Every replica hashes its state at the same
// checkpoints (the first entry of each run of hash_check_entries log
// indexes; fsm/raftsm) and keeps the last few. The leader proposes a hash
// report for its newest checkpoint, a log entry like any other; when a
// replica applies a report it compares the reported hash with its own at
// that index. A mismatch means the replicas applied different entries or an
// application is not deterministic: it is logged as an error, counted and
// shown in /status (hash_check). The comparison happens on every replica,
// so a diverged follower flags itself, and a diverged leader is flagged by
// every follower.

// checkpointsKept bounds the checkpoints a replica remembers; a report
// arrives within a few entries of its checkpoint.
const checkpointsKept = 16

type checkpoint struct{ index, hash uint64 }

type hashChecker struct {
	log *slog.Logger
	met hashMetrics

	mu          sync.Mutex
	own         [checkpointsKept]checkpoint
	next        int // slot of the next checkpoint in own
	reported    uint64
	proposed    uint64
	compared    uint64
	matches     uint64
	mismatches  uint64
	diverged    bool
	lastBad     *httpapi.HashMismatch
	undecodable uint64
}

type hashMetrics struct {
	checks      *prometheus.CounterVec
	diverged    prometheus.Gauge
	undecodable prometheus.Counter
}

var _ raftsm.Monitor = (*hashChecker)(nil)

func newHashChecker(log *slog.Logger, reg prometheus.Registerer) *hashChecker {
	h := &hashChecker{log: log, met: hashMetrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zraft_hash_checks_total",
			Help: "Comparisons of this replica's state hash with a leader's report, by result (match, mismatch, unchecked: no own hash at that index).",
		}, []string{"result"}),
		diverged: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zraft_replica_diverged",
			Help: "1 once this replica's state hash differed from a leader's report at the same index (until restart).",
		}),
		undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zraft_undecodable_entries_total",
			Help: "Log entries the state machine could not decode and skipped.",
		}),
	}}
	reg.MustRegister(h.met.checks, h.met.diverged, h.met.undecodable)
	return h
}

func (h *hashChecker) Checkpoint(index, hash uint64) {
	h.mu.Lock()
	h.own[h.next] = checkpoint{index, hash}
	h.next = (h.next + 1) % checkpointsKept
	h.mu.Unlock()
}

func (h *hashChecker) Report(index, hash, reporter uint64) {
	h.mu.Lock()
	h.reported = max(h.reported, index)
	var mine checkpoint
	for _, c := range h.own {
		if c.index == index {
			mine = c
		}
	}
	result := "unchecked"
	switch {
	case mine.index == 0:
	case mine.hash == hash:
		result = "match"
		h.matches++
		h.compared = max(h.compared, index)
	default:
		result = "mismatch"
		h.mismatches++
		h.compared = max(h.compared, index)
		h.diverged = true
		h.lastBad = &httpapi.HashMismatch{Index: index, Local: fmt.Sprintf("%016x", mine.hash),
			Reported: fmt.Sprintf("%016x", hash), Reporter: reporter}
	}
	h.mu.Unlock()
	h.met.checks.WithLabelValues(result).Inc()
	if result == "mismatch" {
		h.met.diverged.Set(1)
		h.log.Error("replica divergence: this replica's state differs from another member's at the same log index",
			"index", index, "local_hash", fmt.Sprintf("%016x", mine.hash), "reported_hash", fmt.Sprintf("%016x", hash),
			"reporter", reporter)
	}
}

func (h *hashChecker) Undecodable(index uint64, err error) {
	h.mu.Lock()
	h.undecodable++
	h.mu.Unlock()
	h.met.undecodable.Inc()
	h.log.Error("log entry not decodable: skipped on this replica (written by a newer binary, or forged); "+
		"the hash check shows whether the replicas now differ", "index", index, "err", err)
}

// toReport returns the newest checkpoint that no report covers yet and this
// node has not proposed, if any.
func (h *hashChecker) toReport() (checkpoint, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var newest checkpoint
	for _, c := range h.own {
		if c.index > newest.index {
			newest = c
		}
	}
	if newest.index == 0 || newest.index <= h.reported || newest.index <= h.proposed {
		return checkpoint{}, false
	}
	return newest, true
}

func (h *hashChecker) markProposed(index uint64) {
	h.mu.Lock()
	h.proposed = max(h.proposed, index)
	h.mu.Unlock()
}

func (h *hashChecker) status() *httpapi.HashCheck {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &httpapi.HashCheck{Index: h.compared, Matches: h.matches, Mismatches: h.mismatches,
		Diverged: h.diverged, UndecodableEntries: h.undecodable}
	if h.lastBad != nil {
		b := *h.lastBad
		s.LastMismatch = &b
	}
	return s
}

// reportHashes runs while the node does: while it leads, it proposes a
// report for each new checkpoint. Owned by the node (n.hashWG).
func (n *Node) reportHashes(ctx context.Context) {
	defer n.hashWG.Done()
	every := max(n.cfg.RTT*time.Duration(n.cfg.HeartbeatRTT)*5, 100*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !n.IsLeader() {
			continue
		}
		cp, ok := n.hashes.toReport()
		if !ok {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, n.cfg.ProposalTimeout)
		_, _, err := n.raft.Propose(pctx, raftsm.EncodeHashReport(cp.index, cp.hash, n.cfg.ID))
		cancel()
		if err == nil {
			n.hashes.markProposed(cp.index)
		}
	}
}
