package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/fsm"
)

// maxCommandBytes is the largest command app accepts, when it says
// (fsm.CommandSizer); 0 otherwise.
func maxCommandBytes(app fsm.Application) int {
	if s, ok := app.(fsm.CommandSizer); ok {
		return max(s.MaxCommandSize(), 0)
	}
	return 0
}

// registerBudgetMetrics exports the byte budgets: payload bytes in flight
// against max_proposal_bytes, and the replicated state's size against its
// quota (when the application measures it, fsm.StateSizer).
func registerBudgetMetrics(reg prometheus.Registerer, b *actors.ByteBudget, app fsm.Application, quota int64) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zraft_proposal_bytes_in_flight",
			Help: "Payload bytes of client commands and queries admitted and not yet answered on this node (max_proposal_bytes)."},
			func() float64 { return float64(b.Used()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zraft_quota_bytes",
			Help: "The replicated state's byte quota (quota_bytes; 0: none)."},
			func() float64 { return float64(quota) }),
	)
	if s, ok := app.(fsm.StateSizer); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zraft_state_bytes",
			Help: "The replicated application state's size as held against quota_bytes, on this replica."},
			func() float64 { return float64(s.StateBytes()) }))
	}
}
