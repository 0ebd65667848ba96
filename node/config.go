package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Member is one member of the cluster as a node's config names it.
type Member struct {
	// ID is the member's Raft replica id; it must be non-zero and unique.
	ID uint64 `json:"id"`
	// RaftAddr is the host:port other members reach its Raft transport on.
	RaftAddr string `json:"raft_addr"`
	// ClientAddr is the host:port clients reach it on. Leader hints carry it.
	ClientAddr string `json:"client_addr"`
}

// Config is everything a node needs to start. Build it with DefaultConfig,
// then set the identity fields; Validate says what is missing.
type Config struct {
	// ID is this node's member id (one of Members). Required.
	ID uint64 `json:"id"`
	// DataDir holds the Raft log and snapshots. Required unless InMemory.
	DataDir string `json:"data_dir"`
	// Members are the initial members of the cluster, this node included.
	// Required; every member of a new cluster must be given the same list.
	Members []Member `json:"members"`
	// ShardID is the dragonboat shard the cluster's state machine runs in.
	// Default 1.
	ShardID uint64 `json:"shard_id"`

	// RTT is the expected round trip between members; election and heartbeat
	// timeouts are multiples of it. Default 50 ms.
	RTT time.Duration `json:"rtt"`
	// ElectionRTT is the election timeout in RTTs. Default 20 (1 s), which with
	// PreVote and CheckQuorum (always on) gives about a second of failover.
	ElectionRTT uint64 `json:"election_rtt"`
	// HeartbeatRTT is the leader's heartbeat interval in RTTs. Default 2.
	HeartbeatRTT uint64 `json:"heartbeat_rtt"`
	// SnapshotEntries is how many applied entries trigger a snapshot, after
	// which older log entries are compacted. Default 10,000.
	SnapshotEntries uint64 `json:"snapshot_entries"`

	// KeepAliveInterval is the interval clients are told to send keep-alives
	// at. Default 1 s.
	KeepAliveInterval time.Duration `json:"keepalive_interval"`
	// KeepAliveFastPath answers keep-alives where they are decoded, with no
	// actor hop (less leader CPU for idle sessions, and an idle session's
	// actor can retire; see docs/architecture.md "Keep-alive"). Default
	// true. False sends every keep-alive through the session directory and
	// the session's actor.
	KeepAliveFastPath bool `json:"keepalive_fast_path"`
	// SessionTimeout is how long a session lives without a keep-alive (or any
	// other valid message). Default 10 s; at least 3 keep-alive intervals.
	SessionTimeout time.Duration `json:"session_timeout"`
	// ProposalTimeout bounds each Raft proposal and read. A proposal that
	// times out is reported to the client as "outcome unknown". Default 5 s.
	ProposalTimeout time.Duration `json:"proposal_timeout"`
	// AckBatchInterval is how long acknowledgements of server requests are
	// gathered before one proposal records them all. Default 5 ms.
	AckBatchInterval time.Duration `json:"ack_batch_interval"`
	// RedeliverInterval is how long a delivered server request waits for its
	// acknowledgement before it is sent again; it doubles per attempt up to
	// 16 times the interval. Default 1 s.
	RedeliverInterval time.Duration `json:"redeliver_interval"`
	// ShutdownGrace bounds graceful shutdown (leadership transfer, telling
	// clients). Default 3 s.
	ShutdownGrace time.Duration `json:"shutdown_grace"`

	// MaxSessions bounds live sessions on the cluster. Default 100,000.
	MaxSessions int `json:"max_sessions"`
	// MaxConns bounds client connections to this node. Default 10,000.
	MaxConns int `json:"max_conns"`
	// MaxConnsPerSource bounds client connections from one source (an IPv4
	// address or an IPv6 /64), so one host cannot take all of max_conns;
	// past it new connections from that source are closed at once.
	// Default 1,000 (a tenth of max_conns).
	MaxConnsPerSource int `json:"max_conns_per_source"`
	// MaxHandshakes bounds client connections in their TLS/ZMTP handshake
	// at once; past it new connections are closed at once. Default 256.
	MaxHandshakes int `json:"max_handshakes"`
	// MaxHandshakesPerSource bounds handshakes in progress from one source,
	// so silent or byte-at-a-time peers on one host cannot hold every
	// handshake slot. Default 32.
	MaxHandshakesPerSource int `json:"max_handshakes_per_source"`
	// HandshakeTimeout bounds one client connection's TLS plus ZMTP
	// handshake; a peer that has not finished is closed. Default 5 s.
	HandshakeTimeout time.Duration `json:"handshake_timeout"`
	// SendQueueBytes bounds the reply bytes queued for one client connection
	// and not yet written; a client that falls further behind (it stopped
	// reading) is disconnected as a slow consumer. Default 8 MiB; at least
	// max_frame.
	SendQueueBytes int `json:"send_queue_bytes"`
	// MaxQueuedBytes bounds reply bytes queued on all client connections
	// together; past it a connection that already has bytes queued is
	// disconnected as a slow consumer. Default 512 MiB; at least max_frame.
	MaxQueuedBytes int64 `json:"max_queued_bytes"`
	// QueueOverdraftBytes is what connections with an empty queue may
	// still queue past max_queued_bytes, all together, so clients that
	// keep up are served; past it they too are disconnected as slow
	// consumers. Default 32 MiB; not negative.
	QueueOverdraftBytes int64 `json:"queue_overdraft_bytes"`
	// MaxReadingBytes bounds the bytes of frames being read on all client
	// connections together, beyond the first 4 KiB of each; a connection
	// that needs more while it is spent is not read until bytes are free.
	// Default 128 MiB; at least max_frame.
	MaxReadingBytes int64 `json:"max_reading_bytes"`
	// FrameReadTimeout bounds the reading of a client frame larger than
	// 4 KiB from its header to its last byte (waits for max_reading_bytes
	// included); a client that has not sent it whole is disconnected.
	// Default 30 s.
	FrameReadTimeout time.Duration `json:"frame_read_timeout"`
	// ClientPoller parks idle plain-TCP client connections in one epoll
	// poller instead of keeping a reader goroutine each (Linux; no effect
	// under TLS): about 4 KiB less per idle connection
	// (transport.RouterConfig.Poller, docs/transport.md). Default true.
	// False keeps a reader goroutine per connection, a few percent less
	// CPU when hundreds of connections each wake for every message.
	ClientPoller bool `json:"client_poller"`
	// MaxFrame bounds one protocol message in bytes. Default 4 MiB.
	MaxFrame int `json:"max_frame"`
	// MaxPayload bounds a command, query or result payload. Default 1 MiB.
	MaxPayload int `json:"max_payload"`
	// MaxInFlight bounds requests in flight per session; past it the client
	// gets TooManyInFlight. Default 1,024.
	MaxInFlight int `json:"max_in_flight"`
	// MaxProposals bounds Raft proposals and reads in flight on this node;
	// past it clients get Overloaded. Default 8,192.
	MaxProposals int `json:"max_proposals"`
	// MaxInbox bounds frames accepted from the transport but not yet handled;
	// past it frames are dropped (and counted) and clients retry. Default 65,536.
	MaxInbox int `json:"max_inbox"`
	// MaxInboxBytes bounds the bytes of those frames; past it frames are
	// dropped (and counted) and clients retry. Default 256 MiB; at least
	// max_frame.
	MaxInboxBytes int64 `json:"max_inbox_bytes"`
	// SessionCreateRate limits session creations per second on this node;
	// past it clients get RateLimited. Default 1,000; burst is the same.
	SessionCreateRate int `json:"session_create_rate"`
	// MaxSessionsPerSource bounds the sessions the leader serves for one
	// source (an IPv4 address or an IPv6 /64): a CreateSession or a
	// ContinueSession from a source that holds this many gets
	// TooManySessions. A session counts against the source that last bound
	// it until it ends. Default 10,000 (a tenth of max_sessions).
	MaxSessionsPerSource int `json:"max_sessions_per_source"`
	// MaxSessionBytes bounds the payload bytes of one session's commands
	// and queries admitted and not yet answered; past it the session gets
	// Overloaded before anything is proposed. Default 8 MiB; at least
	// max_payload.
	MaxSessionBytes int `json:"max_session_bytes"`
	// MaxProposalBytes bounds the payload bytes of all sessions' commands
	// and queries admitted and not yet answered on this node; past it
	// clients get Overloaded before anything is proposed. Default 128 MiB;
	// at least max_session_bytes.
	MaxProposalBytes int64 `json:"max_proposal_bytes"`
	// QuotaBytes is the byte quota of the replicated application state
	// (fsm.Config.QuotaBytes): past it an application that keeps the quota
	// (kv does) refuses writes with QuotaExceeded, while reads, deletes and
	// session traffic keep working. It must be the same on every member.
	// 0: no quota. Default 512 MiB.
	QuotaBytes int64 `json:"quota_bytes"`

	// TLSCertFile and TLSKeyFile turn on TLS for client connections.
	TLSCertFile string `json:"tls_cert_file"`
	TLSKeyFile  string `json:"tls_key_file"`
	// TLSClientCAFile, when set, requires client certificates signed by it.
	TLSClientCAFile string `json:"tls_client_ca_file"`

	// ClusterID identifies the cluster: 16 hex digits, a random non-zero
	// 64-bit value that every member must be given when the cluster is
	// created (generate one with `node --new-cluster-id`). It is stored in
	// each member's data dir on first start; later starts use the stored id
	// (a different configured id is an error). Every message and snapshot
	// chunk between members carries it; others are dropped. Optional for a
	// one-member cluster and for StartCluster (both generate one).
	ClusterID string `json:"cluster_id"`
	// PeerTLSCAFile, PeerTLSCertFile and PeerTLSKeyFile turn on mutual TLS
	// between members (all three or none): each member presents its
	// certificate and accepts only peers whose certificate the CA signed.
	// A certificate must name its member's Raft host (IP or DNS SAN) and
	// allow both server and client use.
	PeerTLSCAFile   string `json:"peer_tls_ca_file"`
	PeerTLSCertFile string `json:"peer_tls_cert_file"`
	PeerTLSKeyFile  string `json:"peer_tls_key_file"`
	// InsecurePeer lets a member listen for Raft traffic on an address that
	// is not loopback without peer TLS. Anyone who reaches the port can then
	// rewrite the replicated state; a warning is logged at every start.
	InsecurePeer bool `json:"insecure_peer"`
	// MaxPeerConns bounds connections accepted on the Raft port; past it
	// new connections are closed at once. Default 64.
	MaxPeerConns int `json:"max_peer_conns"`
	// PeerIdleTimeout closes a Raft-port connection that sends nothing for
	// this long after a frame (a new connection must start its first frame
	// within 10 s, or this if shorter). Default 90 s: longer than the minute
	// after which dragonboat closes a sending connection it has not used,
	// so that members close their idle connections before the receiver
	// does.
	PeerIdleTimeout time.Duration `json:"peer_idle_timeout"`
	// HashCheckEntries is the distance, in Raft log indexes, between the
	// checkpoints at which replicas hash their state and compare it with
	// the leader's. 0 disables the check. Default 10,000.
	HashCheckEntries uint64 `json:"hash_check_entries"`

	// HTTPAddr serves /metrics, /healthz and /status. Empty disables it.
	HTTPAddr string `json:"http_addr"`

	// Join starts this member as a new member of a running cluster (added
	// first with `zraft member add`): Members lists the cluster's current
	// members (the only senders its Raft port accepts until it has the
	// replicated member directory) and this one; ClusterID is required; the
	// data dir must be empty on the first start. It catches up from the
	// leader.
	Join bool `json:"join"`

	// AdminToken is the bearer token the admin endpoints (/admin/...:
	// leadership transfer, snapshots) require in an "Authorization: Bearer"
	// header; under mutual TLS a client certificate is needed as well.
	// Empty: the admin endpoints answer 403. Give it in a file readable only
	// by the node's user (cmd/node --admin-token-file), never on a command
	// line.
	AdminToken string `json:"admin_token"`
	// Pprof serves Go's profiles (net/http/pprof) at /debug/pprof/ on
	// http_addr, behind the same credential as the admin endpoints (a
	// profile shows the process's code paths and can take seconds of CPU).
	// Default false.
	Pprof bool `json:"pprof"`
	// AdminOpen serves the admin endpoints without a credential. Accepted
	// only when http_addr is a loopback address; the dev cluster uses it
	// and says so at start.
	AdminOpen bool `json:"admin_open"`

	// InMemory keeps the Raft log in memory (an in-memory filesystem). For
	// tests only: everything is lost when the process exits.
	InMemory bool `json:"in_memory"`

	// ClockSkew shifts this node's local clock by the given amount: the
	// time its actors read (actors.Env.Now), so their liveness decisions and
	// the time stamped on the session, liveness, expiry and acknowledgement
	// commands they propose. Client request batches are stamped by
	// actors.Work's own clock, which it does not shift. Test only: the chaos
	// suite (test/chaos) uses it to run a member whose wall clock is wrong.
	// Default 0.
	ClockSkew time.Duration `json:"debug_clock_skew"`
}

// DefaultConfig returns a config with every tunable at its default and no
// identity (ID, DataDir, Members) set.
func DefaultConfig() Config {
	return Config{
		ShardID:           1,
		RTT:               50 * time.Millisecond,
		ElectionRTT:       20,
		HeartbeatRTT:      2,
		SnapshotEntries:   10000,
		KeepAliveInterval: time.Second,
		KeepAliveFastPath: true,
		SessionTimeout:    10 * time.Second,
		ProposalTimeout:   5 * time.Second,
		AckBatchInterval:  5 * time.Millisecond,
		RedeliverInterval: time.Second,
		ShutdownGrace:     3 * time.Second,
		MaxSessions:       100000,
		MaxConns:          10000,
		MaxFrame:          4 << 20,

		ClientPoller:           true,
		MaxConnsPerSource:      1000,
		MaxHandshakes:          256,
		MaxHandshakesPerSource: 32,
		HandshakeTimeout:       5 * time.Second,
		SendQueueBytes:         8 << 20,
		MaxQueuedBytes:         512 << 20,
		QueueOverdraftBytes:    32 << 20,
		MaxReadingBytes:        128 << 20,
		FrameReadTimeout:       30 * time.Second,

		MaxPayload:        1 << 20,
		MaxInFlight:       1024,
		MaxProposals:      8192,
		MaxInbox:          65536,
		MaxInboxBytes:     256 << 20,
		SessionCreateRate: 1000,
		MaxPeerConns:      64,

		MaxSessionsPerSource: 10000,
		MaxSessionBytes:      8 << 20,
		MaxProposalBytes:     128 << 20,
		QuotaBytes:           512 << 20,

		PeerIdleTimeout:  90 * time.Second,
		HashCheckEntries: 10000,
	}
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("node: invalid config")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

// Validate reports the first problem with c, in words an operator can act on.
func (c *Config) Validate() error {
	if c.ID == 0 {
		return configErr("id must be set (non-zero)")
	}
	if len(c.Members) == 0 {
		return configErr("members must list the cluster's initial members")
	}
	seen := map[uint64]bool{}
	self := false
	for _, m := range c.Members {
		if m.ID == 0 {
			return configErr("member ids must be non-zero")
		}
		if seen[m.ID] {
			return configErr("member id %d listed twice", m.ID)
		}
		seen[m.ID] = true
		if _, _, err := net.SplitHostPort(m.RaftAddr); err != nil {
			return configErr("member %d: raft_addr %q: %v", m.ID, m.RaftAddr, err)
		}
		if _, _, err := net.SplitHostPort(m.ClientAddr); err != nil {
			return configErr("member %d: client_addr %q: %v", m.ID, m.ClientAddr, err)
		}
		self = self || m.ID == c.ID
	}
	if !self {
		return configErr("id %d is not among the members", c.ID)
	}
	if c.DataDir == "" && !c.InMemory {
		return configErr("data_dir must be set")
	}
	if c.ShardID == 0 {
		return configErr("shard_id must be non-zero")
	}
	if c.RTT <= 0 || c.ElectionRTT < 2*c.HeartbeatRTT || c.HeartbeatRTT == 0 {
		return configErr("rtt must be positive and election_rtt at least twice heartbeat_rtt (>0)")
	}
	if c.KeepAliveInterval <= 0 {
		return configErr("keepalive_interval must be positive")
	}
	if c.SessionTimeout < 3*c.KeepAliveInterval {
		return configErr("session_timeout (%v) must be at least 3 keep-alive intervals (%v)", c.SessionTimeout, 3*c.KeepAliveInterval)
	}
	for name, d := range map[string]time.Duration{
		"proposal_timeout": c.ProposalTimeout, "ack_batch_interval": c.AckBatchInterval,
		"redeliver_interval": c.RedeliverInterval, "shutdown_grace": c.ShutdownGrace,
		"peer_idle_timeout": c.PeerIdleTimeout, "handshake_timeout": c.HandshakeTimeout,
		"frame_read_timeout": c.FrameReadTimeout,
	} {
		if d <= 0 {
			return configErr("%s must be positive", name)
		}
	}
	for name, n := range map[string]int{
		"max_sessions": c.MaxSessions, "max_conns": c.MaxConns, "max_frame": c.MaxFrame,
		"max_payload": c.MaxPayload, "max_in_flight": c.MaxInFlight, "max_proposals": c.MaxProposals,
		"max_inbox": c.MaxInbox, "session_create_rate": c.SessionCreateRate, "max_peer_conns": c.MaxPeerConns,
		"max_conns_per_source": c.MaxConnsPerSource, "max_handshakes": c.MaxHandshakes,
		"max_handshakes_per_source": c.MaxHandshakesPerSource,
		"max_sessions_per_source":   c.MaxSessionsPerSource,
	} {
		if n <= 0 {
			return configErr("%s must be positive", name)
		}
	}
	if c.SendQueueBytes < c.MaxFrame || c.MaxQueuedBytes < int64(c.MaxFrame) || c.MaxInboxBytes < int64(c.MaxFrame) {
		return configErr("send_queue_bytes (%d), max_queued_bytes (%d) and max_inbox_bytes (%d) must be at least max_frame (%d)",
			c.SendQueueBytes, c.MaxQueuedBytes, c.MaxInboxBytes, c.MaxFrame)
	}
	if c.MaxReadingBytes < int64(c.MaxFrame) {
		return configErr("max_reading_bytes (%d) must be at least max_frame (%d)", c.MaxReadingBytes, c.MaxFrame)
	}
	if c.QueueOverdraftBytes < 0 {
		return configErr("queue_overdraft_bytes must not be negative")
	}
	if c.MaxSessionBytes < c.MaxPayload || c.MaxProposalBytes < int64(c.MaxSessionBytes) {
		return configErr("max_session_bytes (%d) must be at least max_payload (%d), and max_proposal_bytes (%d) at least max_session_bytes",
			c.MaxSessionBytes, c.MaxPayload, c.MaxProposalBytes)
	}
	if c.QuotaBytes < 0 {
		return configErr("quota_bytes must not be negative (0: no quota)")
	}
	if c.MaxPayload > c.MaxFrame {
		return configErr("max_payload (%d) must not exceed max_frame (%d)", c.MaxPayload, c.MaxFrame)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return configErr("tls_cert_file and tls_key_file go together")
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		return configErr("tls_client_ca_file needs tls_cert_file and tls_key_file")
	}
	if c.Join && c.ClusterID == "" {
		return configErr("join needs the running cluster's cluster_id (--cluster-id)")
	}
	if c.AdminOpen && c.HTTPAddr != "" && !loopback(c.HTTPAddr) {
		return configErr("admin_open serves cluster-changing admin endpoints without a credential: "+
			"only on a loopback http_addr, not %s; set admin_token instead", c.HTTPAddr)
	}
	return c.validatePeer()
}

// validatePeer checks the Raft-port settings: the cluster id's form, peer
// TLS all or nothing, and no plaintext Raft port off loopback unless the
// operator said insecure_peer.
func (c *Config) validatePeer() error {
	if c.ClusterID != "" {
		if _, err := ParseClusterID(c.ClusterID); err != nil {
			return fmt.Errorf("%w: cluster_id: %w", ErrConfig, err)
		}
	}
	set := 0
	for _, f := range []string{c.PeerTLSCAFile, c.PeerTLSCertFile, c.PeerTLSKeyFile} {
		if f != "" {
			set++
		}
	}
	if set != 0 && set != 3 {
		return configErr("peer_tls_ca_file, peer_tls_cert_file and peer_tls_key_file go together (peer TLS is mutual)")
	}
	if hb := c.RTT * time.Duration(c.HeartbeatRTT); c.PeerIdleTimeout < 2*hb {
		return configErr("peer_idle_timeout (%v) must be at least two heartbeats (%v)", c.PeerIdleTimeout, 2*hb)
	}
	if set == 0 && !c.InsecurePeer && !loopback(c.self().RaftAddr) {
		return configErr("raft_addr %s is not a loopback address and peer TLS is off: anyone who reaches it "+
			"could rewrite the replicated state. Set peer_tls_ca_file, peer_tls_cert_file and peer_tls_key_file "+
			"(--peer-tls-ca, --peer-tls-cert, --peer-tls-key), or accept the risk with insecure_peer (--insecure-peer)",
			c.self().RaftAddr)
	}
	return nil
}

// PeerTLS reports whether members authenticate each other with mutual TLS.
func (c *Config) PeerTLS() bool { return c.PeerTLSCAFile != "" }

// insecurePeerWarning is what a member logs at every start when it listens
// for Raft traffic off loopback without peer TLS; "" when it does not.
func (c *Config) insecurePeerWarning() string {
	if c.PeerTLS() || loopback(c.self().RaftAddr) {
		return ""
	}
	return "peer TLS is off on a Raft address that is not loopback (insecure_peer): anyone who reaches " +
		c.self().RaftAddr + " and reads the cluster id from the traffic can forge Raft messages and rewrite " +
		"the replicated state; turn on peer TLS for production"
}

// loopback reports whether a host:port listens only on the loopback
// interface: a loopback IP or "localhost". An empty host (all interfaces)
// is not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// self returns this node's member entry. Validate guarantees it exists.
func (c *Config) self() Member {
	for _, m := range c.Members {
		if m.ID == c.ID {
			return m
		}
	}
	return Member{}
}

// LoadConfig reads a JSON config file over the defaults. Durations are
// written as nanoseconds or, more readably, as Go duration strings ("1s").
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("node: read config: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	// Accept "1s"-style strings for duration fields by rewriting them to
	// nanoseconds before the strict decode below.
	for _, k := range []string{"rtt", "keepalive_interval", "session_timeout", "proposal_timeout",
		"ack_batch_interval", "redeliver_interval", "shutdown_grace", "peer_idle_timeout", "debug_clock_skew",
		"handshake_timeout", "frame_read_timeout"} {
		var s string
		if v, ok := raw[k]; ok && json.Unmarshal(v, &s) == nil {
			d, err := time.ParseDuration(s)
			if err != nil {
				return c, fmt.Errorf("%w: %s: %s: %v", ErrConfig, path, k, err)
			}
			raw[k] = json.RawMessage(fmt.Sprint(int64(d)))
		}
	}
	norm, _ := json.Marshal(raw)
	dec := json.NewDecoder(bytes.NewReader(norm))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return c, nil
}
