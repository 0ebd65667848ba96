// keepalive: leader-local liveness tracking.
//
// Owns: a table session → (local deadline, timeout, when its liveness was
// last recorded, heard since that record, check in flight), bounded by the
// number of live sessions (the state machine's MaxSessions). Keep-alives
// cost no Raft write: they only move a session's deadline.
//
// Two clocks meet here and are kept apart by their types. Deadlines are
// instants of this node's local clock (time.Time from Env.Now, monotonic);
// recorded liveness is fsm.ClusterTime, stamped by whichever leader wrote
// it, and is only ever compared with other cluster times. The one bridge
// is the stamp this node puts on its own proposals (fsm.Stamp).
//
// Signs of life arrive two ways: Seen messages (from the directory when it
// binds a session, from session actors for other traffic, at most once per
// keep-alive interval each), and the Liveness table of the Inbox, where
// keep-alives answered on the connections' goroutines are noted; the actor
// drains it at every tick (liveness.go), so a keep-alive costs no actor
// message.
//
// Every half keep-alive interval, on the leader, it
//   - drains the Liveness table and closes connections bound to a session
//     that sent nothing for the session timeout, and is past its deadline,
//     each plus two keep-alive intervals (at most maxReap per tick,
//     counted in ReapedConns);
//   - proposes one RecordLiveness batch (at most maxRecordBatch sessions)
//     naming the sessions heard from since their last record, once that
//     record is a third of their timeout old on the local clock, so that a
//     new leader inherits recent liveness (a failed batch is undone and
//     retried);
//   - unless an expiry check is still in flight, reads, in one ReadIndex
//     round, the recorded liveness of up to maxExpireBatch sessions whose
//     local deadline passed, and then proposes one ExpireSessions batch
//     naming those still past their deadline, each with the liveness just
//     read: the state machine refuses an expiry (Stale) that a newer record
//     raced, and the actor then counts that record as a sign of life.
//     Reading first, one check at a time, and not proposing again after an
//     expiry whose outcome is unknown until checkLost has passed (and a new
//     read) make it one expiry proposal per expired session; the bound per
//     tick spreads a mass expiry over ticks.
//
// When this node becomes leader (or the actor restarts) it first proposes an
// empty RecordLiveness stamped with its clock, so that cluster time has moved
// up to at least its own stamp, then reads, in one ReadIndex round, the
// cluster time and every live session's recorded liveness, and gives each
// session the local deadline
//
//	now + grace + remaining, remaining = clamp(timeout − age, 0, timeout)
//
// where age = cluster time − recorded liveness is measured in cluster time
// alone, and grace is one keep-alive interval plus a third of the timeout
// (the most a record can lag behind the last sign of life, and time for the
// client to find the new leader). However skewed the clock of a previous
// leader was, a live session therefore gets at least the grace to reach
// this leader, and a dead one is expired within grace + timeout (plus up to
// a tick) of the change.
//
// Spawned by the node root, supervised by it. On restart the table is rebuilt
// the same way as on a leader change.
package actors

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/fsm"
)

// Batch bounds, sized for 100k sessions per leader. A session is recorded
// about every third of its timeout, so with the defaults (1 s keep-alive,
// 10 s timeout, a tick every 0.5 s) 100k sessions need about 15k records per
// tick: maxRecordBatch takes 16,384 (256 KiB of session ids, far below the
// state machine's MaxBatch of 65,536). Expiries are spread: at most
// maxExpireBatch per tick and one check (a read, then a proposal) in flight
// at a time, so 40k sessions that vanish together are expired over about 20
// s while the leader keeps serving, each with exactly one proposal. The rest
// wait for the next tick. maxReap bounds the silent connections closed per
// tick.
const (
	maxRecordBatch = 16384
	maxExpireBatch = 1024
	maxReap        = 1024
)

type live struct {
	// deadline is the local instant after which the session is expired
	// unless seen again.
	deadline time.Time
	timeout  time.Duration
	// recordedAt is the local instant this node last had the session's
	// liveness recorded (or learned it, at load or creation).
	recordedAt time.Time
	// heard is set by a real sign of life (Seen) since the last record;
	// only such sessions are recorded, so a new leader's loaded table or a
	// refused expiry never extends a dead session.
	heard bool
	// checking is when an expiry check (read, then proposal) started; zero
	// when none is in flight. A check whose reply was lost stops counting
	// after twice the proposal timeout, so the session is considered again.
	checking time.Time
}

type tick struct{}

// RecordNow asks the keepalive actor on the leader to record, at once, the
// liveness of every session heard from since its last record, whatever the
// age of that record, and to answer RecordedNow when the proposal is done
// (or failed). The node sends it before asking Raft to hand leadership
// over: while a transfer is under way the leader can propose nothing (Raft
// drops proposals until the transfer ends, up to an election timeout per
// attempt), so without it the new leader would judge every session by a
// record up to a third of its timeout older than its last sign of life,
// plus the whole transfer.
type RecordNow struct{}

// RecordedNow answers RecordNow: Sessions were named in the record, Err is
// the proposal's error (nil when there was nothing to record).
type RecordedNow struct {
	Sessions int
	Err      error
}

type sessionsTag struct{ term uint64 }

// stampTag marks the clock stamp a new leader proposes before it loads.
type stampTag struct{ term uint64 }

// recordTag remembers, per session in a liveness batch, when it was recorded
// before the batch, so that a failed batch can be undone and retried.
type recordTag struct {
	prev map[fsm.SessionID]time.Time
	// replyTo, when set, is told RecordedNow once the record is done.
	replyTo *actor.PID
}

// checkTag marks the read of the recorded liveness of sessions past their
// deadline, before their expiry is proposed.
type checkTag struct {
	term uint64
	ids  []fsm.SessionID // sorted
}

// expireTag lists, in proposal order, the sessions of one expiry batch.
type expireTag struct{ ids []fsm.SessionID }

type keepalive struct {
	env    *Env
	leader LeaderChanged
	table  map[fsm.SessionID]*live
	timer  *time.Timer
	// checkSince is when the expiry check in flight started (zero when
	// none is): only one runs at a time, so expiring many sessions is
	// spread over ticks. A check whose reply was lost stops counting after
	// checkLost.
	checkSince time.Time
}

// NewKeepAlive returns the producer of the keepalive actor.
func NewKeepAlive(env *Env) actor.Producer {
	return func() actor.Actor { return &keepalive{env: env, table: make(map[fsm.SessionID]*live)} }
}

func (k *keepalive) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		k.env.debug("keepalive: started")
		c.Request(k.env.Refs.Raft, &LeaderQuery{})
	case *actor.Stopping, *actor.Restarting:
		k.stop()
	case *LeaderChanged:
		k.leaderChanged(c, m)
	case *ReadDone:
		switch t := m.Tag.(type) {
		case sessionsTag:
			k.loaded(c, t, m)
		case checkTag:
			k.checked(c, t, m)
		}
	case *Seen:
		k.seen(m, k.env.Now())
	case *RecordNow:
		k.recordNow(c)
	case *SessionRemoved:
		delete(k.table, m.Session)
	case *tick:
		k.timer = nil
		if k.leader.IsLeader {
			k.tick(c)
			k.arm(c)
		}
	case *Proposed:
		if t, ok := m.Tag.(stampTag); ok {
			// Load even if the stamp failed: the clamp still bounds
			// every deadline by grace + timeout.
			if k.leader.IsLeader && t.term == k.leader.Term {
				k.load(c)
			}
			return
		}
		k.proposed(c, m)
	}
}

func (k *keepalive) stop() {
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
}

func (k *keepalive) arm(c actor.Context) {
	if k.timer != nil {
		return
	}
	system, self := c.ActorSystem(), c.Self()
	k.timer = time.AfterFunc(k.env.Settings.KeepAliveInterval/2, func() { system.Root.Send(self, &tick{}) })
}

func (k *keepalive) leaderChanged(c actor.Context, m *LeaderChanged) {
	was := k.leader
	k.leader = *m
	k.env.debug("keepalive: leader changed", "leader", m.IsLeader, "term", m.Term, "was_leader", was.IsLeader, "was_term", was.Term)
	if !m.IsLeader {
		clear(k.table)
		k.stop()
		return
	}
	if was.IsLeader && was.Term == m.Term {
		return
	}
	clear(k.table)
	k.stampClock(c)
	k.arm(c)
}

// stampClock proposes an empty RecordLiveness stamped with this node's clock
// and loads the table once it is applied (or failed). Cluster time moves
// only when commands are applied, so in a quiet cluster it would still stand
// at the last record, every session's age would read zero, and leaders
// changing faster than a timeout would each give a dead session a fresh one.
// After the stamp, the age is measured up to this leader's own clock.
func (k *keepalive) stampClock(c actor.Context) {
	cmd := fsm.EncodeCommand(nil, fsm.RecordLiveness{Time: fsm.Stamp(k.env.Now())})
	c.Send(k.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: stampTag{term: k.leader.Term}})
}

func (k *keepalive) load(c actor.Context) {
	c.Send(k.env.Refs.Raft, &Read{Query: fsm.LivenessQuery{}, ReplyTo: c.Self(), Tag: sessionsTag{term: k.leader.Term}})
}

func (k *keepalive) loaded(c actor.Context, t sessionsTag, r *ReadDone) {
	if !k.leader.IsLeader || t.term != k.leader.Term {
		return
	}
	if r.Err != nil {
		// Try again: without the table no session would ever expire.
		k.load(c)
		return
	}
	lv, _ := r.Result.(fsm.Liveness)
	now := k.env.Now()
	k.env.debug("keepalive: liveness loaded", "term", t.term, "sessions", len(lv.Sessions), "table", len(k.table))
	for _, s := range lv.Sessions {
		// remaining comes from cluster time alone (the clock and the
		// record were both stamped by leaders) and is clamped to one
		// timeout, so a skewed old leader can neither cut it below zero
		// nor stretch it past a timeout; grace then covers the lag of the
		// record and the client's move to this leader.
		deadline := now.Add(Grace(s.Timeout, k.env.Settings.KeepAliveInterval) + s.Remaining(lv.Clock))
		l := k.table[s.ID]
		if l == nil {
			k.table[s.ID] = &live{deadline: deadline, timeout: s.Timeout, recordedAt: now}
			continue
		}
		// Seen since this node became leader: keep the later deadline.
		l.timeout = s.Timeout
		if deadline.After(l.deadline) {
			l.deadline = deadline
		}
	}
}

// Grace is how long past what remains of its timeout (by recorded liveness)
// a new leader gives a session: one keep-alive interval plus a third of the
// timeout, the most a liveness record lags behind the last sign of life. It
// lets every live client reach the new leader before its session is judged,
// while a dead session is still expired within timeout + Grace of the change.
func Grace(timeout, keepAliveInterval time.Duration) time.Duration {
	return timeout/3 + keepAliveInterval
}

// seen notes a sign of life of a session at the instant at.
func (k *keepalive) seen(m *Seen, at time.Time) {
	if !k.leader.IsLeader {
		return
	}
	now := at
	l := k.table[m.Session]
	if l == nil {
		if m.Timeout == 0 {
			return
		}
		// A session this node just created or continued: its creation or
		// continuation is a liveness record.
		l = &live{timeout: m.Timeout, recordedAt: now}
		k.table[m.Session] = l
	}
	if d := now.Add(l.timeout); d.After(l.deadline) {
		l.deadline = d
	}
	l.heard = true
}

// drain takes the keep-alives answered on the connections' goroutines
// since the last drain, each with the instant of its connection's last
// message. A session not in the table yet (this leader is still loading
// it) is added with its binding's timeout rather than forgotten.
func (k *keepalive) drain() {
	k.env.Inbox.Liveness().Drain(func(id fsm.SessionID, timeout time.Duration, at time.Time) {
		k.seen(&Seen{Session: id, Timeout: timeout}, at)
	})
}

// checkLost is how long an expiry check (a read, then a proposal, each
// bounded by the proposal timeout) may go unanswered before its sessions are
// considered again; an answer lost with a restarted bridge must not keep
// them alive forever, and an answer merely slow must not lead to a second
// proposal.
func (k *keepalive) checkLost() time.Duration { return 3 * k.env.Settings.ProposalTimeout }

func (k *keepalive) tick(c actor.Context) {
	now := k.env.Now()
	// Keep-alives answered on the connections' goroutines since the last
	// tick, each with the instant of its connection's last message.
	k.drain()
	k.reap(now)
	checkFree := k.checkSince.IsZero() || now.Sub(k.checkSince) > k.checkLost()
	var due []fsm.SessionID
	rec := newLiveRecord(now)
	for id, l := range k.table {
		switch {
		case now.After(l.deadline):
			if checkFree && (l.checking.IsZero() || now.Sub(l.checking) > k.checkLost()) && len(due) < maxExpireBatch {
				l.checking = now
				due = append(due, id)
			}
		case l.heard && now.Sub(l.recordedAt) > l.timeout/3:
			rec.add(id, l)
		}
	}
	if len(due) > 0 {
		// Sorted so that the expiry proposal's bytes do not depend on map
		// order.
		slices.SortFunc(due, fsm.SessionID.Compare)
		k.checkSince = now
		c.Send(k.env.Refs.Raft, &Read{Query: fsm.LivenessQuery{Sessions: due}, ReplyTo: c.Self(), Tag: checkTag{term: k.leader.Term, ids: due}})
	}
	k.proposeRecord(c, rec, nil)
}

// recordNow proposes a liveness record of every session heard from since
// its last record (RecordNow), and answers the sender when it is done.
func (k *keepalive) recordNow(c actor.Context) {
	reply := c.Sender()
	if !k.leader.IsLeader {
		if reply != nil {
			c.Send(reply, &RecordedNow{Err: fmt.Errorf("%w: not the leader", ErrUnavailable)})
		}
		return
	}
	now := k.env.Now()
	k.drain()
	rec := newLiveRecord(now)
	for id, l := range k.table {
		if l.heard && !now.After(l.deadline) {
			rec.add(id, l)
		}
	}
	if !k.proposeRecord(c, rec, reply) && reply != nil {
		c.Send(reply, &RecordedNow{})
	}
}

// liveRecord gathers one RecordLiveness batch: at most maxRecordBatch
// sessions, each with the instant of its previous record so that a failed
// batch can be undone.
type liveRecord struct {
	now   time.Time
	batch []fsm.SessionID
	prev  map[fsm.SessionID]time.Time
}

func newLiveRecord(now time.Time) *liveRecord {
	return &liveRecord{now: now, prev: map[fsm.SessionID]time.Time{}}
}

// add puts the session in the batch, unless the batch is full (the rest
// wait for the next one), and marks it recorded now.
func (r *liveRecord) add(id fsm.SessionID, l *live) {
	if len(r.batch) >= maxRecordBatch {
		return
	}
	r.batch = append(r.batch, id)
	r.prev[id] = l.recordedAt
	l.recordedAt, l.heard = r.now, false
}

// proposeRecord proposes the batch, if it names any session (sorted, so
// that the proposal's bytes do not depend on map order), and reports
// whether it did; replyTo, when set, is told RecordedNow once it is done.
func (k *keepalive) proposeRecord(c actor.Context, r *liveRecord, replyTo *actor.PID) bool {
	if len(r.batch) == 0 {
		return false
	}
	slices.SortFunc(r.batch, fsm.SessionID.Compare)
	cmd := fsm.EncodeCommand(nil, fsm.RecordLiveness{Time: fsm.Stamp(r.now), Sessions: r.batch})
	c.Send(k.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: recordTag{prev: r.prev, replyTo: replyTo}})
	return true
}

// reap closes the connections bound to a session that sent nothing, not
// even a keep-alive, for the session's timeout, and whose deadline here
// passed (each plus two keep-alive intervals, so that a session expiring on
// time tells its client first): a
// client that holds a connection and a session without showing any sign of
// life must not keep a connection slot, also while a mass expiry is spread
// over ticks. Its session expires on its own deadline.
func (k *keepalive) reap(now time.Time) {
	if k.env.Conns == nil {
		return
	}
	// A session is spared while its expiry is still to come or under way:
	// not yet two keep-alive intervals past its deadline here (a new
	// leader's grace can put the deadline later than the connection's
	// silence alone says), being checked or proposed, or no longer in the
	// table (expired, its removal still on its way to the directory). Its
	// expiry then tells the client SessionClosed and unbinds the
	// connection; closing the connection first would leave the client
	// guessing.
	margin := 2 * k.env.Settings.KeepAliveInterval
	spare := func(id fsm.SessionID) bool {
		l := k.table[id]
		return l == nil || !l.checking.IsZero() || !now.After(l.deadline.Add(margin))
	}
	for _, conn := range k.env.Inbox.Liveness().Silent(now, margin, maxReap, spare) {
		k.env.debug("keepalive: silent connection closed", "conn", conn)
		k.env.Inbox.Liveness().Unbind(conn)
		if k.env.Conns.CloseConn(conn) == nil {
			k.env.Metrics.ReapedConns.WithLabelValues("silent_bound").Inc()
		}
	}
}

// checked proposes the expiry of every checked session still past its
// deadline, naming the liveness just read, which the state machine requires
// to be the latest record.
func (k *keepalive) checked(c actor.Context, t checkTag, r *ReadDone) {
	lv, ok := r.Result.(fsm.Liveness)
	if r.Err != nil || !ok || !k.leader.IsLeader || t.term != k.leader.Term {
		k.checkSince = time.Time{}
		// Decided again next tick (a new term rebuilt the table anyway).
		for _, id := range t.ids {
			if l := k.table[id]; l != nil {
				l.checking = time.Time{}
			}
		}
		return
	}
	now := k.env.Now()
	// Signs of life since the check began count: keep-alives noted on the
	// connections, and any message still being heard on a connection bound
	// to the session here (a safety net under the notes: a session whose
	// client this node hears is never expired).
	k.drain()
	due := make(map[fsm.SessionID]bool, len(t.ids))
	for _, id := range t.ids {
		due[id] = true
	}
	var heard []Seen
	var heardAt []time.Time
	k.env.Inbox.Liveness().LastHeard(due, func(id fsm.SessionID, timeout time.Duration, at time.Time) {
		heard = append(heard, Seen{Session: id, Timeout: timeout})
		heardAt = append(heardAt, at)
	})
	for i := range heard {
		k.seen(&heard[i], heardAt[i])
	}
	var expiries []fsm.Expiry
	i := 0
	for _, id := range t.ids {
		// lv.Sessions is t.ids in order, less the sessions no longer live.
		var s *fsm.SessionLiveness
		if i < len(lv.Sessions) && lv.Sessions[i].ID == id {
			s = &lv.Sessions[i]
			i++
		}
		l := k.table[id]
		switch {
		case l == nil:
		case s == nil:
			// Gone from the replicated state: its removal notice reaches
			// the directory, which stops its actor.
			delete(k.table, id)
		case !now.After(l.deadline):
			l.checking = time.Time{} // seen while the read was in flight
		default:
			k.env.debug("keepalive: expiry proposed", "session", id, "past_deadline", now.Sub(l.deadline),
				"recorded_ago", now.Sub(l.recordedAt), "heard", l.heard, "remaining", s.Remaining(lv.Clock))
			expiries = append(expiries, fsm.Expiry{Session: id, LivenessStamp: s.Liveness})
		}
	}
	if len(expiries) == 0 {
		k.checkSince = time.Time{}
		return
	}
	k.env.Metrics.Expiries.Add(float64(len(expiries)))
	ids := make([]fsm.SessionID, len(expiries))
	for i, e := range expiries {
		ids[i] = e.Session
	}
	cmd := fsm.EncodeCommand(nil, fsm.ExpireSessions{Time: fsm.Stamp(now), Expiries: expiries})
	c.Send(k.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: expireTag{ids: ids}})
}

func (k *keepalive) proposed(c actor.Context, p *Proposed) {
	if rt, ok := p.Tag.(recordTag); ok {
		if rt.replyTo != nil {
			c.Send(rt.replyTo, &RecordedNow{Sessions: len(rt.prev), Err: p.Err})
		}
		if p.Err != nil {
			// Undo the batch so the next tick records these sessions again.
			for id, before := range rt.prev {
				if l := k.table[id]; l != nil {
					l.recordedAt, l.heard = before, true
				}
			}
		}
		return
	}
	t, ok := p.Tag.(expireTag)
	if !ok {
		return
	}
	k.checkSince = time.Time{}
	if p.Err != nil && !errors.Is(p.Err, ErrOverloaded) {
		// The expiry may still be applied (outcome unknown): its sessions
		// stay marked as being checked until checkLost has passed, and are
		// then read again before anything is proposed, so a late commit is
		// seen instead of proposed twice.
		return
	}
	var results []fsm.Result
	if p.Err == nil {
		var err error
		results, err = fsm.DecodeBatchResult(fsm.Result{Value: p.Value, Data: p.Data})
		if err != nil || len(results) != len(t.ids) {
			results = nil // treated as a failed proposal: decided again next tick
		}
	}
	now := k.env.Now()
	for i, id := range t.ids {
		l := k.table[id]
		if l == nil {
			continue
		}
		l.checking = time.Time{}
		if results == nil {
			continue
		}
		k.env.debug("keepalive: expiry applied", "session", id, "status", fsm.Status(results[i].Value))
		switch fsm.Status(results[i].Value) {
		case fsm.StatusOK, fsm.StatusSessionNotFound, fsm.StatusSessionExpired, fsm.StatusSessionClosed:
			delete(k.table, id)
		case fsm.StatusStale:
			// A liveness record landed between the read and the expiry:
			// the log only records real signs of life (a request, an
			// acknowledgement, a keep-alive batch), so this is one, and
			// a recent one. The session lives a timeout from now.
			if d := now.Add(l.timeout); d.After(l.deadline) {
				l.deadline = d
			}
		}
	}
}
