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
	// HashCheck is this replica's replica-divergence check; absent when
	// hash_check_entries is 0.
	HashCheck *HashCheck `json:"hash_check,omitempty"`
}

// HashCheck reports how this replica's state hash compared with the hashes
// leaders reported at the same log indexes.
type HashCheck struct {
	// Index is the newest index compared.
	Index      uint64 `json:"index"`
	Matches    uint64 `json:"matches"`
	Mismatches uint64 `json:"mismatches"`
	// Diverged is true once a comparison failed (until the node restarts).
	Diverged     bool          `json:"diverged"`
	LastMismatch *HashMismatch `json:"last_mismatch,omitempty"`
	// UndecodableEntries counts log entries this replica skipped because
	// it could not decode them.
	UndecodableEntries uint64 `json:"undecodable_entries"`
}

// HashMismatch is one failed comparison: this replica's hash and the one
// member Reporter reported, at log index Index (hashes as 16 hex digits).
type HashMismatch struct {
	Index    uint64 `json:"index"`
	Local    string `json:"local_hash"`
	Reported string `json:"reported_hash"`
	Reporter uint64 `json:"reporter"`
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

// TransferResult is the body of POST /admin/leader/transfer: whether
// leadership reached the target before the wait ended, who leads now (0:
// nobody known) and how long the request waited.
type TransferResult struct {
	Moved    bool   `json:"moved"`
	LeaderID uint64 `json:"leader_id"`
	WaitedMS int64  `json:"waited_ms"`
}
