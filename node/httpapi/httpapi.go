// Package httpapi declares the JSON bodies of a node's HTTP endpoints
// (/status and /sessions). It imports only the standard library, so the CLI
// and other tools decode them without linking the node (and dragonboat).
package httpapi

// Member is one cluster member in a Status.
type Member struct {
	ID         uint64 `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	ClientAddr string `json:"client_addr"`
}

// Status is the body of GET /status: one member's view of the cluster.
type Status struct {
	ID       uint64   `json:"id"`
	Role     string   `json:"role"` // leader, follower or unavailable (no leader known)
	LeaderID uint64   `json:"leader_id"`
	Term     uint64   `json:"term"`
	Members  []Member `json:"members"`
	// Sessions, Clock and Applied come from this replica's applied state.
	Sessions int    `json:"sessions"`
	Clock    int64  `json:"cluster_time_ns"`
	Applied  uint64 `json:"applied"`
}

// Session is one element of the body of GET /sessions.
type Session struct {
	ID                    string            `json:"id"` // 32 hex digits
	Capabilities          map[string]string `json:"capabilities,omitempty"`
	TimeoutMS             int64             `json:"timeout_ms"`
	OpenedAtNS            int64             `json:"opened_at_ns"`
	LivenessNS            int64             `json:"liveness_ns"`
	Watermark             uint64            `json:"watermark"`
	CachedResponses       int               `json:"cached_responses"`
	PendingServerRequests int               `json:"pending_server_requests"`
}

// MaxSessionsPage is the most sessions one GET /sessions answers; page with
// ?after=<the last id of the previous page>.
const MaxSessionsPage = 10000
