package actors

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the node's Prometheus collectors. Names start with "zraft_".
type Metrics struct {
	Sessions prometheus.Gauge
	// SessionActors is the session actors alive: at most Sessions, fewer
	// while idle sessions' actors are retired (keep-alive fast path).
	SessionActors   prometheus.Gauge
	MessagesIn      *prometheus.CounterVec // by kind
	MessagesOut     *prometheus.CounterVec // by kind
	BadFrames       *prometheus.CounterVec // by error class
	InboxDropped    prometheus.Counter
	EncodeErrors    prometheus.Counter
	Proposals       *prometheus.CounterVec // by outcome
	ProposalSeconds prometheus.Histogram
	Reads           *prometheus.CounterVec // by outcome
	Expiries        prometheus.Counter
	LeaderChanges   prometheus.Counter
	Redeliveries    prometheus.Counter
	Restarts        *prometheus.CounterVec // by actor kind and directive
	IsLeader        prometheus.Gauge
	// ReapedConns counts connections the node closed because their
	// client showed no sign of life, by reason (silent_bound: bound to a
	// session, nothing received for the session timeout).
	ReapedConns *prometheus.CounterVec
	// Refused counts commands and queries answered before they were
	// proposed, by reason: in_flight, queries, backlog, session_bytes,
	// node_bytes, command_size.
	Refused *prometheus.CounterVec
	// SessionsRefused counts CreateSession and ContinueSession refused by
	// a limit, by reason: per_source, rate, max_sessions.
	SessionsRefused *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (which may
// be nil, for tests that do not export).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Sessions:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "zraft_sessions", Help: "Live sessions served by this node (leader only)."}),
		MessagesIn:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_messages_in_total", Help: "Protocol messages received, by kind."}, []string{"kind"}),
		MessagesOut:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_messages_out_total", Help: "Protocol messages sent, by kind."}, []string{"kind"}),
		BadFrames:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_bad_frames_total", Help: "Frames dropped because they did not decode, by reason."}, []string{"reason"}),
		InboxDropped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "zraft_inbox_dropped_total", Help: "Frames dropped because the node's inbox was full."}),
		EncodeErrors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "zraft_encode_errors_total", Help: "Replies that failed to encode (a bug)."}),
		Proposals:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_proposals_total", Help: "Raft proposals, by outcome."}, []string{"outcome"}),
		ProposalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "zraft_proposal_seconds", Help: "Raft proposal latency.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}),
		Reads:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_reads_total", Help: "Raft reads, by outcome."}, []string{"outcome"}),
		Expiries:        prometheus.NewCounter(prometheus.CounterOpts{Name: "zraft_session_expiries_total", Help: "Session expiries proposed by this node."}),
		LeaderChanges:   prometheus.NewCounter(prometheus.CounterOpts{Name: "zraft_leader_changes_total", Help: "Leader changes observed."}),
		Redeliveries:    prometheus.NewCounter(prometheus.CounterOpts{Name: "zraft_server_request_redeliveries_total", Help: "Server requests sent again for want of an acknowledgement."}),
		Restarts:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_supervisor_events_total", Help: "Supervisor decisions, by actor kind and directive."}, []string{"actor", "directive"}),
		IsLeader:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "zraft_is_leader", Help: "1 while this node is the leader."}),
	}
	m.ReapedConns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_reaped_connections_total",
		Help: "Connections closed for showing no sign of life, by reason."}, []string{"reason"})
	m.Refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_requests_refused_total",
		Help: "Commands and queries refused before they were proposed, by reason (in_flight, queries, backlog, session_bytes, node_bytes, command_size)."}, []string{"reason"})
	m.SessionsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zraft_sessions_refused_total",
		Help: "Session creations and continuations refused by a limit, by reason (per_source, rate, max_sessions)."}, []string{"reason"})
	m.SessionActors = prometheus.NewGauge(prometheus.GaugeOpts{Name: "zraft_session_actors",
		Help: "Session actors alive on this node (leader only); below zraft_sessions while idle sessions' actors are retired."})
	if reg != nil {
		reg.MustRegister(m.SessionActors)
		reg.MustRegister(m.ReapedConns, m.Refused, m.SessionsRefused)
		reg.MustRegister(m.Sessions, m.MessagesIn, m.MessagesOut, m.BadFrames, m.InboxDropped, m.EncodeErrors,
			m.Proposals, m.ProposalSeconds, m.Reads, m.Expiries, m.LeaderChanges, m.Redeliveries, m.Restarts, m.IsLeader)
	}
	return m
}

// Inc implements supervision.Counter.
func (m *Metrics) Inc(kind, directive string) { m.Restarts.WithLabelValues(kind, directive).Inc() }
