package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zraft/zraft/node/httpapi"
)

// Admin endpoints change the cluster, so they are not open to whoever
// reaches the HTTP port. The rule (docs/operations.md, Admin access):
//
//   - /metrics and /healthz are open (under mutual TLS too);
//   - /status and /sessions are open without TLS and need a verified client
//     certificate under mutual TLS (node/tls.go);
//   - /admin/... needs "Authorization: Bearer <admin_token>" always, on top
//     of the client certificate under mutual TLS. Without an admin_token
//     the admin endpoints answer 403, unless the node runs with AdminOpen
//     (the dev cluster), which is only accepted on a loopback HTTP address.

// ErrAdmin is wrapped by the errors of admin operations.
var ErrAdmin = errors.New("node: admin")

// maxTransferWait bounds how long one leadership transfer request waits.
const maxTransferWait = time.Minute

// AdminMode says in words who may call the admin endpoints (printed at
// start).
func (c *Config) AdminMode() string {
	switch {
	case c.HTTPAddr == "":
		return "off (no http_addr)"
	case c.AdminOpen:
		return "OPEN without a credential on " + c.HTTPAddr + " (admin_open, dev only: anyone on this machine can move the leader or take a backup)"
	case c.AdminToken == "":
		return "disabled (no admin_token)"
	case c.TLSClientCAFile != "":
		return "bearer token and client certificate required"
	default:
		return "bearer token required"
	}
}

// adminAuth guards the admin handler h.
func (n *Node) adminAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.cfg.AdminOpen {
			h.ServeHTTP(w, r)
			return
		}
		if n.cfg.AdminToken == "" {
			http.Error(w, "admin endpoints are disabled: the node has no admin_token (--admin-token-file)", http.StatusForbidden)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(n.cfg.AdminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="zraft admin"`)
			http.Error(w, "admin credential required: send Authorization: Bearer <admin token> (zraft --admin-token)",
				http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// adminMux returns the admin endpoints, already behind adminAuth.
func (n *Node) adminMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/leader/transfer", n.serveTransfer)
	mux.HandleFunc("POST /admin/snapshot", n.serveSnapshot)
	mux.HandleFunc("POST /admin/members/add", n.serveAddMember)
	mux.HandleFunc("POST /admin/members/remove", n.serveRemoveMember)
	return n.adminAuth(mux)
}

// serveTransfer moves leadership: POST /admin/leader/transfer?id=N&wait=10s.
// dragonboat's transfer is best effort, so it is asked again every half
// second until member N leads or the wait ends; the answer says which.
func (n *Node) serveTransfer(w http.ResponseWriter, r *http.Request) {
	target, err := strconv.ParseUint(r.URL.Query().Get("id"), 10, 64)
	if err != nil || target == 0 {
		http.Error(w, "id: want a member id (a positive integer)", http.StatusBadRequest)
		return
	}
	wait := 10 * time.Second
	if s := r.URL.Query().Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait <= 0 || wait > maxTransferWait {
			http.Error(w, fmt.Sprintf("wait: want a duration up to %v", maxTransferWait), http.StatusBadRequest)
			return
		}
	}
	res, err := n.MoveLeader(r.Context(), target, wait)
	if err != nil {
		code := http.StatusServiceUnavailable
		if errors.Is(err, ErrAdmin) {
			code = http.StatusBadRequest
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// MoveLeader asks for leadership to move to member target and waits until
// it leads or wait passes, asking again every half second (dragonboat
// drops a transfer whose target does not catch up in an election timeout).
// The result says whether it moved; a target that is not a voting member
// is an error matching ErrAdmin.
func (n *Node) MoveLeader(ctx context.Context, target uint64, wait time.Duration) (httpapi.TransferResult, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := n.checkVoter(ctx, target); err != nil {
		return httpapi.TransferResult{}, err
	}
	var asked time.Time
	for {
		id, _, ok := n.leader()
		if ok && id == target {
			return httpapi.TransferResult{Moved: true, LeaderID: id, WaitedMS: time.Since(start).Milliseconds()}, nil
		}
		if ok && time.Since(asked) >= 500*time.Millisecond {
			_ = n.TransferLeadership(target)
			asked = time.Now()
		}
		select {
		case <-ctx.Done():
			id, _, _ := n.leader()
			return httpapi.TransferResult{Moved: false, LeaderID: id, WaitedMS: time.Since(start).Milliseconds()}, nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkVoter fails unless target is a voting member of the shard.
func (n *Node) checkVoter(ctx context.Context, target uint64) error {
	nh := n.raft.nh.Load()
	if nh == nil {
		return errNotStarted
	}
	mctx, cancel := context.WithTimeout(ctx, n.cfg.ProposalTimeout)
	defer cancel()
	m, err := nh.SyncGetShardMembership(mctx, n.cfg.ShardID)
	if err != nil {
		return mapRaftErr(err)
	}
	if _, ok := m.Nodes[target]; !ok {
		return fmt.Errorf("%w: member %d is not a voting member of the cluster", ErrAdmin, target)
	}
	return nil
}
