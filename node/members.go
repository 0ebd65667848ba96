package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/node/httpapi"
)

// Membership changes. Raft (dragonboat) knows members by id and Raft
// address; clients need client addresses, which live in the replicated
// member directory (fsm.SetMembers). The leader keeps the two in step:
//
//   - add: the directory gets the new member first, then dragonboat's
//     config change adds it; if the change fails, the directory entry is
//     taken back;
//   - remove: dragonboat's config change first (after moving leadership
//     away when the leader itself goes), then the directory entry;
//   - every directorySyncInterval each member reloads the directory it
//     serves hints from, and the leader reconciles the directory with
//     Raft's membership (a new cluster's first directory, a restored
//     cluster's new members, a change cut short by a crash).
//
// One change at a time: a change while another is in flight, or while the
// directory and Raft disagree, is refused with ErrMembership.

// ErrMembership is wrapped by every refused membership change.
var ErrMembership = errors.New("node: membership")

// ErrNotLeaderForChange is wrapped (with ErrMembership) when a membership
// change reaches a member that does not lead; the HTTP answer is 421
// Misdirected Request, so the admin client finds the leader and asks again.
var ErrNotLeaderForChange = errors.New("node: not the leader")

// directorySyncInterval is how often members reload the directory and the
// leader reconciles it.
const directorySyncInterval = 250 * time.Millisecond

// syncDirectory runs until ctx ends; the node waits for it on Close.
func (n *Node) syncDirectory(ctx context.Context) {
	defer n.dirWG.Done()
	t := time.NewTicker(directorySyncInterval)
	defer t.Stop()
	for {
		n.loadDirectory()
		if n.IsLeader() && n.adminMu.TryLock() {
			if err := n.reconcile(ctx); err != nil && ctx.Err() == nil {
				n.log.Debug("member directory reconcile", "err", err)
			}
			n.adminMu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// loadDirectory copies the replicated directory into what the actors read.
func (n *Node) loadDirectory() []fsm.MemberRecord {
	v, err := n.StaleRead(fsm.MembersQuery{})
	if err != nil {
		return nil
	}
	recs := v.([]fsm.MemberRecord)
	if len(recs) > 0 {
		ms := make([]actors.Member, len(recs))
		for i, r := range recs {
			ms[i] = actors.Member{ID: r.ID, ClientAddr: r.ClientAddr}
		}
		n.dir.Store(ms)
		peers := make(map[uint64]string, len(recs))
		for _, r := range recs {
			peers[r.ID] = r.RaftAddr
		}
		n.peers.Store(&peers)
	}
	return recs
}

// lookupPeer answers the Raft transport's question for members added while
// the node runs (the configured members it knows itself).
func (n *Node) lookupPeer(id uint64) (string, bool) {
	if p := n.peers.Load(); p != nil {
		a, ok := (*p)[id]
		return a, ok
	}
	return "", false
}

// raftMembers returns dragonboat's view of the shard's membership.
func (n *Node) raftMembers(ctx context.Context) (voters map[uint64]string, removed map[uint64]bool, cc uint64, err error) {
	nh := n.raft.nh.Load()
	if nh == nil {
		return nil, nil, 0, errNotStarted
	}
	mctx, cancel := context.WithTimeout(ctx, n.cfg.ProposalTimeout)
	defer cancel()
	m, err := nh.SyncGetShardMembership(mctx, n.cfg.ShardID)
	if err != nil {
		return nil, nil, 0, mapRaftErr(err)
	}
	removed = map[uint64]bool{}
	for id := range m.Removed {
		removed[id] = true
	}
	for id := range m.NonVotings {
		removed[id] = true // not a voter: cannot be added as one
	}
	for id := range m.Witnesses {
		removed[id] = true
	}
	return m.Nodes, removed, m.ConfigChangeID, nil
}

// wantDirectory is the directory that matches Raft's voters: each voter's
// record from the directory (or, for a voter the directory lacks, from the
// configured members); a voter whose client address nobody knows is left
// out and reported.
func (n *Node) wantDirectory(dir []fsm.MemberRecord, voters map[uint64]string) ([]fsm.MemberRecord, []uint64) {
	var want []fsm.MemberRecord
	var unknown []uint64
	for id, raft := range voters {
		i := slices.IndexFunc(dir, func(r fsm.MemberRecord) bool { return r.ID == id })
		if i >= 0 {
			want = append(want, fsm.MemberRecord{ID: id, RaftAddr: raft, ClientAddr: dir[i].ClientAddr})
			continue
		}
		j := slices.IndexFunc(n.cfg.Members, func(m Member) bool { return m.ID == id })
		if j >= 0 {
			want = append(want, fsm.MemberRecord{ID: id, RaftAddr: raft, ClientAddr: n.cfg.Members[j].ClientAddr})
			continue
		}
		unknown = append(unknown, id)
	}
	slices.SortFunc(want, func(a, b fsm.MemberRecord) int { return cmpID(a.ID, b.ID) })
	return want, unknown
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// reconcile makes the directory match Raft's voters. The caller holds
// adminMu and leads.
func (n *Node) reconcile(ctx context.Context) error {
	voters, _, _, err := n.raftMembers(ctx)
	if err != nil {
		return err
	}
	dir := n.loadDirectory()
	want, unknown := n.wantDirectory(dir, voters)
	if len(unknown) > 0 {
		n.log.Warn("member directory: no client address known for voters; add them with their client address",
			"members", unknown)
	}
	if slices.Equal(want, dir) || len(want) == 0 {
		return nil
	}
	return n.proposeDirectory(ctx, want)
}

// proposeDirectory replaces the replicated directory.
func (n *Node) proposeDirectory(ctx context.Context, ms []fsm.MemberRecord) error {
	pctx, cancel := context.WithTimeout(ctx, n.cfg.ProposalTimeout)
	defer cancel()
	v, data, err := n.raft.Propose(pctx, fsm.EncodeCommand(nil, fsm.SetMembers{Time: fsm.Stamp(clock(n.cfg.ClockSkew)()), Members: ms}))
	if err != nil {
		return err
	}
	if fsm.Status(v) != fsm.StatusOK {
		return fmt.Errorf("%w: directory update refused: %s", ErrMembership, data)
	}
	n.loadDirectory()
	return nil
}

// Directory returns the member directory this member serves hints from.
func (n *Node) Directory() []Member {
	v, err := n.StaleRead(fsm.MembersQuery{})
	if err == nil {
		if recs := v.([]fsm.MemberRecord); len(recs) > 0 {
			out := make([]Member, len(recs))
			for i, r := range recs {
				out[i] = Member{ID: r.ID, RaftAddr: r.RaftAddr, ClientAddr: r.ClientAddr}
			}
			return out
		}
	}
	return slices.Clone(n.cfg.Members)
}

// changeLockWait is how long a membership change waits for the one before
// it (or a reconcile round, which is short) before it is refused.
const changeLockWait = 3 * time.Second

// lockChange takes adminMu, waiting up to changeLockWait.
func (n *Node) lockChange(ctx context.Context) bool {
	deadline := time.Now().Add(changeLockWait)
	for !n.adminMu.TryLock() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// beginChange takes the change lock and checks that this member leads and
// that the directory matches Raft's voters (no change in flight).
func (n *Node) beginChange(ctx context.Context) (map[uint64]string, map[uint64]bool, uint64, []fsm.MemberRecord, error) {
	if !n.lockChange(ctx) {
		return nil, nil, 0, nil, fmt.Errorf("%w: another membership change is in flight; retry when it is done", ErrMembership)
	}
	fail := func(err error) (map[uint64]string, map[uint64]bool, uint64, []fsm.MemberRecord, error) {
		n.adminMu.Unlock()
		return nil, nil, 0, nil, err
	}
	if !n.IsLeader() {
		id, _, _ := n.leader()
		return fail(fmt.Errorf("%w: %w: member %d does not lead (member %d does): ask the leader", ErrMembership, ErrNotLeaderForChange, n.cfg.ID, id))
	}
	voters, removed, cc, err := n.raftMembers(ctx)
	if err != nil {
		return fail(err)
	}
	dir := n.loadDirectory()
	if want, _ := n.wantDirectory(dir, voters); !slices.Equal(want, dir) {
		// A directory not yet written (a new or restored cluster) or a
		// change cut short: reconcile now, then look again.
		if err := n.reconcile(ctx); err == nil {
			dir = n.loadDirectory()
		}
	}
	if want, _ := n.wantDirectory(dir, voters); !slices.Equal(want, dir) {
		return fail(fmt.Errorf("%w: the member directory is being reconciled with Raft's membership (a change in flight); retry in a second", ErrMembership))
	}
	return voters, removed, cc, dir, nil
}

// AddMember adds a voting member: the directory records it, then Raft's
// membership. Start the new member with Config.Join (node --join) and an
// empty data dir; it catches up from the leader (by snapshot once the log
// is compacted).
func (n *Node) AddMember(ctx context.Context, m Member) error {
	if m.ID == 0 {
		return fmt.Errorf("%w: member id must be non-zero", ErrMembership)
	}
	for name, a := range map[string]string{"raft address": m.RaftAddr, "client address": m.ClientAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil || len(a) > 256 {
			return fmt.Errorf("%w: %s %q: want host:port", ErrMembership, name, a)
		}
	}
	voters, removed, cc, dir, err := n.beginChange(ctx)
	if err != nil {
		return err
	}
	defer n.adminMu.Unlock()
	if _, ok := voters[m.ID]; ok {
		return fmt.Errorf("%w: id %d is already in use by a member", ErrMembership, m.ID)
	}
	if removed[m.ID] {
		return fmt.Errorf("%w: id %d belonged to a removed member; Raft never reuses an id: pick a new one", ErrMembership, m.ID)
	}
	if len(voters) >= fsm.MaxMembers {
		return fmt.Errorf("%w: the cluster has %d members, the most it may have", ErrMembership, len(voters))
	}
	for id, a := range voters {
		if a == m.RaftAddr {
			return fmt.Errorf("%w: raft address %s is member %d's", ErrMembership, a, id)
		}
	}
	next := append(slices.Clone(dir), fsm.MemberRecord{ID: m.ID, RaftAddr: m.RaftAddr, ClientAddr: m.ClientAddr})
	slices.SortFunc(next, func(a, b fsm.MemberRecord) int { return cmpID(a.ID, b.ID) })
	if err := n.proposeDirectory(ctx, next); err != nil {
		return err
	}
	nh := n.raft.nh.Load()
	if nh == nil {
		return errNotStarted
	}
	cctx, cancel := context.WithTimeout(ctx, 2*n.cfg.ProposalTimeout)
	defer cancel()
	if err := nh.SyncRequestAddReplica(cctx, n.cfg.ShardID, m.ID, m.RaftAddr, cc); err != nil {
		// Take the directory entry back (the reconciler would too).
		_ = n.proposeDirectory(context.Background(), dir)
		return fmt.Errorf("%w: add member %d to Raft: %v", ErrMembership, m.ID, mapRaftErr(err))
	}
	n.log.Info("member added", "member", m.ID, "raft_addr", m.RaftAddr, "client_addr", m.ClientAddr)
	return nil
}

// RemoveMember removes a voting member: Raft's membership first, then the
// directory. Removing the leader moves leadership to another member first
// (the change then runs from this member as a follower). The last member
// cannot be removed.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	voters, _, cc, dir, err := n.beginChange(ctx)
	if err != nil {
		return err
	}
	defer n.adminMu.Unlock()
	if _, ok := voters[id]; !ok {
		return fmt.Errorf("%w: %d is not a member", ErrMembership, id)
	}
	if len(voters) == 1 {
		return fmt.Errorf("%w: %d is the last member; a cluster cannot remove its last member", ErrMembership, id)
	}
	if id == n.cfg.ID {
		target := uint64(0)
		for v := range voters {
			if v != id && (target == 0 || v < target) {
				target = v
			}
		}
		res, err := n.MoveLeader(ctx, target, 10*time.Second)
		if err != nil {
			return err
		}
		if !res.Moved {
			return fmt.Errorf("%w: member %d leads and leadership did not move to %d in time; retry", ErrMembership, id, target)
		}
	}
	nh := n.raft.nh.Load()
	if nh == nil {
		return errNotStarted
	}
	cctx, cancel := context.WithTimeout(ctx, 2*n.cfg.ProposalTimeout)
	defer cancel()
	if err := nh.SyncRequestDeleteReplica(cctx, n.cfg.ShardID, id, cc); err != nil {
		return fmt.Errorf("%w: remove member %d from Raft: %v", ErrMembership, id, mapRaftErr(err))
	}
	next := slices.DeleteFunc(slices.Clone(dir), func(r fsm.MemberRecord) bool { return r.ID == id })
	if err := n.proposeDirectory(ctx, next); err != nil {
		// The reconciler finishes it on the leader.
		n.log.Warn("member removed from Raft; directory update left to the reconciler", "member", id, "err", err)
	}
	n.log.Info("member removed", "member", id)
	return nil
}

// serveAddMember: POST /admin/members/add?id=N&raft=HOST:PORT&client=HOST:PORT.
func (n *Node) serveAddMember(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, err := strconv.ParseUint(q.Get("id"), 10, 64)
	if err != nil || id == 0 {
		http.Error(w, "id: want a positive integer", http.StatusBadRequest)
		return
	}
	err = n.AddMember(r.Context(), Member{ID: id, RaftAddr: q.Get("raft"), ClientAddr: q.Get("client")})
	answerChange(w, err, fmt.Sprintf("member %d added", id))
}

// serveRemoveMember: POST /admin/members/remove?id=N.
func (n *Node) serveRemoveMember(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.URL.Query().Get("id"), 10, 64)
	if err != nil || id == 0 {
		http.Error(w, "id: want a positive integer", http.StatusBadRequest)
		return
	}
	answerChange(w, n.RemoveMember(r.Context(), id), fmt.Sprintf("member %d removed", id))
}

func answerChange(w http.ResponseWriter, err error, ok string) {
	switch {
	case err == nil:
		_, _ = fmt.Fprintln(w, ok)
	case errors.Is(err, ErrNotLeaderForChange):
		http.Error(w, err.Error(), http.StatusMisdirectedRequest)
	case errors.Is(err, ErrMembership), errors.Is(err, ErrAdmin):
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	}
}

// statusMembers is the member list /status shows: the directory.
func (n *Node) statusMembers() []httpapi.Member {
	var out []httpapi.Member
	for _, m := range n.Directory() {
		out = append(out, httpapi.Member{ID: m.ID, RaftAddr: m.RaftAddr, ClientAddr: m.ClientAddr})
	}
	return out
}
