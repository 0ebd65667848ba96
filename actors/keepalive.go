// keepalive: leader-local liveness tracking.
//
// Owns: a table session → (last seen, liveness recorded in the log, timeout,
// heard since the last record), bounded by the number of live sessions (the
// state machine's MaxSessions). Keep-alives cost no Raft write: they only
// update this table. Every half keep-alive interval, on the leader, it
//   - proposes one RecordLiveness batch (at most maxBatch sessions) naming
//     the sessions heard from since their last record, once that record is
//     older than a third of their timeout, so that a new leader inherits
//     recent liveness (a failed batch is undone and retried);
//   - proposes one ExpireSessions batch (at most maxBatch) naming each
//     session not seen for its timeout and the recorded liveness the
//     decision was based on, so that the state machine ignores an expiry
//     that a newer record raced (the actor then reads that record and
//     times the session from it).
//
// When this node becomes leader it reads the live sessions from the
// replicated state and starts each one's clock at its recorded liveness plus
// a grace of one keep-alive interval and a third of the timeout (the most a
// record can lag). A leader change therefore never expires a live session
// (its client keeps sending keep-alives to whoever leads), and leader changes
// cannot keep a dead session alive: only a real sign of life is ever
// recorded, and the grace is well short of a fresh timeout.
//
// Spawned by the node root, supervised by it. On restart the table is rebuilt
// the same way as on a leader change.
package actors

import (
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/fsm"
)

// maxBatch bounds the sessions in one RecordLiveness proposal; the rest wait
// for the next tick.
const maxBatch = 4096

type live struct {
	seen     int64 // local wall clock, ns
	recorded int64 // cluster time of the last liveness record known
	// heard is set by a real sign of life (Seen) since the last record; only
	// such sessions are recorded, so a new leader's loaded table or a
	// refused expiry never extends a dead session.
	heard   bool
	timeout time.Duration
	// expiring is when an expiry was proposed (zero: none in flight). A
	// proposal whose reply was lost stops counting after twice the proposal
	// timeout, so the session is considered again.
	expiring time.Time
}

type tick struct{}

type sessionsTag struct{ term uint64 }

// recordTag remembers, per session in a liveness batch, the recorded value
// before the batch, so that a failed batch can be undone and retried.
type recordTag struct{ prev map[fsm.SessionID]int64 }

// expireTag lists, in proposal order, the sessions of one expiry batch.
type expireTag struct{ ids []fsm.SessionID }

// livenessTag asks for a session's replicated liveness after an expiry lost
// to a newer record.
type livenessTag struct{ id fsm.SessionID }

type keepalive struct {
	env    *Env
	leader LeaderChanged
	table  map[fsm.SessionID]*live
	timer  *time.Timer
}

// NewKeepAlive returns the producer of the keepalive actor.
func NewKeepAlive(env *Env) actor.Producer {
	return func() actor.Actor { return &keepalive{env: env, table: make(map[fsm.SessionID]*live)} }
}

func (k *keepalive) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		c.Request(k.env.Refs.Raft, &LeaderQuery{})
	case *actor.Stopping, *actor.Restarting:
		k.stop()
	case *LeaderChanged:
		k.leaderChanged(c, m)
	case *ReadDone:
		if t, ok := m.Tag.(livenessTag); ok {
			k.liveness(t.id, m)
			return
		}
		k.loaded(c, m)
	case *Seen:
		k.seen(m)
	case *SessionRemoved:
		delete(k.table, m.Session)
	case *tick:
		k.timer = nil
		if k.leader.IsLeader {
			k.tick(c)
			k.arm(c)
		}
	case *Proposed:
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
	if !m.IsLeader {
		clear(k.table)
		k.stop()
		return
	}
	if was.IsLeader && was.Term == m.Term {
		return
	}
	clear(k.table)
	c.Send(k.env.Refs.Raft, &Read{Query: fsm.SessionsQuery{}, ReplyTo: c.Self(), Tag: sessionsTag{term: m.Term}})
	k.arm(c)
}

func (k *keepalive) loaded(c actor.Context, r *ReadDone) {
	t, ok := r.Tag.(sessionsTag)
	if !ok || !k.leader.IsLeader || t.term != k.leader.Term {
		return
	}
	if r.Err != nil {
		// Try again: without the table no session would ever expire.
		c.Send(k.env.Refs.Raft, &Read{Query: fsm.SessionsQuery{}, ReplyTo: c.Self(), Tag: t})
		return
	}
	infos, _ := r.Result.([]fsm.SessionInfo)
	for _, s := range infos {
		l := k.table[s.ID]
		if l == nil {
			l = &live{}
			k.table[s.ID] = l
		}
		l.timeout, l.recorded = s.Timeout, s.Liveness
		// Sessions seen since this node became leader keep their newer time.
		l.seen = max(l.seen, s.Liveness+k.grace(s.Timeout))
	}
}

// grace is how long past its replicated liveness a new leader gives a
// session before its timeout starts: one keep-alive interval plus the most
// the recorded liveness can lag behind the truth (a third of the timeout,
// when records are written), so that no live client is expired by a leader
// change, while it stays well short of a fresh timeout, so that leader
// changes cannot keep a dead session alive.
func (k *keepalive) grace(timeout time.Duration) int64 {
	return (timeout/3 + k.env.Settings.KeepAliveInterval).Nanoseconds()
}

// liveness applies a session's replicated liveness read after its expiry
// lost to a newer record (a request or acknowledgement the log recorded):
// that record, not this moment, is the latest sign of life.
func (k *keepalive) liveness(id fsm.SessionID, r *ReadDone) {
	l := k.table[id]
	if l == nil {
		return
	}
	if _, gone := sessionGone(r.Err); gone {
		delete(k.table, id)
		return
	}
	if info, ok := r.Result.(fsm.SessionInfo); ok {
		l.recorded = max(l.recorded, info.Liveness)
		l.seen = max(l.seen, info.Liveness)
	}
}

func (k *keepalive) seen(m *Seen) {
	if !k.leader.IsLeader {
		return
	}
	now := k.env.Now().UnixNano()
	l := k.table[m.Session]
	if l == nil {
		if m.Timeout == 0 {
			return
		}
		// A session this node just created or continued: its creation or
		// continuation is recent enough to count as recorded liveness.
		l = &live{recorded: now, timeout: m.Timeout}
		k.table[m.Session] = l
	}
	l.seen = max(l.seen, now)
	l.heard = true
}

func (k *keepalive) tick(c actor.Context) {
	now := k.env.Now().UnixNano()
	var batch []fsm.SessionID
	var expiries []fsm.Expiry
	prev := map[fsm.SessionID]int64{}
	for id, l := range k.table {
		switch {
		case now-l.seen > l.timeout.Nanoseconds() && k.env.Now().Sub(l.expiring) > 2*k.env.Settings.ProposalTimeout &&
			len(expiries) < maxBatch:
			l.expiring = k.env.Now()
			k.env.Metrics.Expiries.Inc()
			expiries = append(expiries, fsm.Expiry{Session: id, LivenessStamp: l.recorded})
		case l.heard && now-l.recorded > l.timeout.Nanoseconds()/3 && len(batch) < maxBatch:
			batch = append(batch, id)
			prev[id] = l.recorded
			l.recorded, l.heard = now, false
		}
	}
	if len(expiries) > 0 {
		// One proposal for every expiry due this tick, sorted so that its
		// bytes do not depend on map order.
		slices.SortFunc(expiries, func(a, b fsm.Expiry) int { return a.Session.Compare(b.Session) })
		ids := make([]fsm.SessionID, len(expiries))
		for i, e := range expiries {
			ids[i] = e.Session
		}
		cmd := fsm.EncodeCommand(nil, fsm.ExpireSessions{Time: now, Expiries: expiries})
		c.Send(k.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: expireTag{ids: ids}})
	}
	if len(batch) > 0 {
		// Sorted so that the proposal's bytes do not depend on map order.
		slices.SortFunc(batch, fsm.SessionID.Compare)
		cmd := fsm.EncodeCommand(nil, fsm.RecordLiveness{Time: now, Sessions: batch})
		c.Send(k.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: recordTag{prev: prev}})
	}
}

func (k *keepalive) proposed(c actor.Context, p *Proposed) {
	if rt, ok := p.Tag.(recordTag); ok {
		if p.Err != nil {
			// Undo the batch so the next tick records these sessions again.
			for id, before := range rt.prev {
				if l := k.table[id]; l != nil {
					l.recorded, l.heard = min(l.recorded, before), true
				}
			}
		}
		return
	}
	t, ok := p.Tag.(expireTag)
	if !ok {
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
	for i, id := range t.ids {
		l := k.table[id]
		if l == nil {
			continue
		}
		l.expiring = time.Time{}
		if results == nil {
			continue
		}
		switch fsm.Status(results[i].Value) {
		case fsm.StatusOK, fsm.StatusSessionNotFound, fsm.StatusSessionExpired, fsm.StatusSessionClosed:
			delete(k.table, id)
		case fsm.StatusStale:
			// A newer liveness record won the race: learn it (the session
			// lives on until its timeout runs from that record).
			c.Send(k.env.Refs.Raft, &Read{Query: fsm.SessionQuery{ID: id}, ReplyTo: c.Self(), Tag: livenessTag{id: id}})
		}
	}
}
