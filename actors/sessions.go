// sessions: the session directory.
//
// Owns: the map connection ↔ session, the session actors (its children), the
// creations and continuations in progress, the session-creation rate limit,
// and leader gating. Only the leader serves sessions: on a follower,
// CreateSession and ContinueSession get SessionRejected(NotLeader, hint) and
// other session traffic gets RequestError / QueryError / SessionClosed with
// the hint; with no leader known the code is ClusterUnavailable.
//
// A session's entry lives as long as the session is served here; its actor
// only while the session has work: an idle actor retires (session.go) and
// the entry keeps the session's connection, source and backlog with no
// actor. Anything the directory has for such a session (a client message,
// server requests, a continuation) spawns a new actor first and is then
// forwarded to it, so the session's messages keep their order. A Resync is
// not: the directory reads the pending server requests of each session
// with no actor itself and spawns one only where some are pending.
//
// Spawned by the node root, supervised by it. On restart its children (the
// session actors) are stopped with it and the bindings are gone, while the
// connections stay open: a bound client's next message gets
// SessionClosed(SessionNotFound) and the client continues its session with
// ContinueSession, which rebuilds everything from the replicated state.
// Nothing acknowledged is lost because responses are cached in the state
// machine and resent requests are answered from that cache.
package actors

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

// SessionMsg is a client message for a bound session, routed to its actor.
type SessionMsg struct {
	Conn ConnID
	Msg  codec.Message
	// size is the frame's length, held of the session's backlog (and the
	// node's byte budget) until the actor handles the message.
	size int
}

// Deliver hands server requests to a session's actor.
type Deliver struct {
	Session fsm.SessionID
	Reqs    []fsm.ServerRequest
}

// SessionRemoved tells the directory the state machine removed a session.
type SessionRemoved struct {
	Session fsm.SessionID
	Reason  fsm.RemoveReason
}

// Resync makes every session actor re-read its pending server requests from
// the replicated state (after the observer relay had to drop a notice).
type Resync struct{}

// Drain tells the directory the node is about to close (and, if it leads,
// to hand leadership over). From now on a client that loses its binding
// because leadership moved is told SessionClosed(ShuttingDown) with the new
// leader's hint, as soon as that leader is known, instead of NotLeader or
// ClusterUnavailable; until then its messages are not answered (at most the
// node's shutdown grace). Refusals say ShuttingDown. The reply is a
// *DrainStarted.
type Drain struct{}

// DrainStarted answers Drain.
type DrainStarted struct{}

// Shutdown tells the directory the node is closing: every bound client, and
// every client still waiting for the new leader's hint, is told
// (SessionClosed(ShuttingDown) with the hint) and unbound. The reply is a
// *ShutdownDone.
type Shutdown struct{ Hint Member }

// ShutdownDone answers Shutdown.
type ShutdownDone struct{}

// sessionStarted is sent by a (re)started session actor to learn its binding.
type sessionStarted struct{ id fsm.SessionID }

// bind tells a session actor which connection it serves (0: none). seq is
// the directory's count of messages forwarded to the actor, this one
// included (0: not counted).
type bind struct {
	conn ConnID
	seq  uint64
}

type createTag struct {
	conn    ConnID
	nonce   uint64
	msg     *codec.CreateSession
	attempt int
}

// maxIDAttempts bounds how often a creation is proposed again with a fresh
// id after the state machine reports an id collision (2^-128 odds each).
const maxIDAttempts = 3

type continueTag struct {
	conn  ConnID
	id    fsm.SessionID
	hash  fsm.SecretHash
	nonce uint64
}

const (
	orphanTTL  = 10 * time.Second
	maxOrphans = 65536
)

// backlogSlack is how many messages beyond MaxInFlight may wait in one
// session actor's mailbox (keep-alives, acks, queries) before the directory
// refuses more with Overloaded.
const backlogSlack = 64

type entry struct {
	pid  *actor.PID
	conn ConnID
	info fsm.SessionInfo
	// backlog counts messages (and their bytes) forwarded to the session
	// actor and not yet handled; the actor marks them done. It lives and
	// dies with the entry (closed when the entry is forgotten), so a
	// stopped actor cannot leak it.
	backlog *backlog
	// source is the source of the connection that last bound the session
	// here; the session counts against that source's
	// MaxSessionsPerSource until it is removed or bound from another.
	source string
	// sent counts the messages forwarded to pid since it was spawned;
	// the actor asks to retire saying how many it handled, and is retired
	// only if that is all of them. pid is nil while the session has no
	// actor (retired); acked is then the acknowledged server request its
	// last actor had seen, and mustRead says its next actor must read its
	// pending requests (a resync's read by the directory failed).
	sent     uint64
	acked    uint64
	mustRead bool
}

type directory struct {
	env       *Env
	leader    LeaderChanged
	byConn    map[ConnID]fsm.SessionID
	bySession map[fsm.SessionID]*entry
	// busy marks connections with a creation or continuation in flight (and
	// since when), so one connection cannot pile up proposals. A mark whose
	// reply was lost is ignored after twice the proposal timeout.
	busy map[ConnID]time.Time
	// orphans are connections unbound because leadership was lost while no
	// new leader was known; when one becomes known within orphanTTL they
	// are sent its hint, so their clients need not search. Bounded by
	// maxOrphans (the oldest beyond it are not told).
	orphans map[ConnID]time.Time
	// unbound are open connections bound to no session, and since when; a
	// connection unbound for longer than the session timeout is closed, so
	// an idle or abandoned connection cannot hold a MaxConns slot forever.
	// Bounded by the transport's MaxConns.
	unbound map[ConnID]time.Time
	reaper  *time.Timer
	tokens  float64
	refill  time.Time
	// draining is set by Drain: the node is closing. handover holds the
	// connections unbound by the loss of leadership while draining, which
	// are told SessionClosed(ShuttingDown) once the new leader is known
	// (or at Shutdown). Bounded by the transport's MaxConns. drainHint is
	// the new leader given by Shutdown.
	draining  bool
	handover  map[ConnID]struct{}
	drainHint codec.LeaderHint
	// perSource counts the entries of bySession by source. Bounded by
	// bySession. creating counts the creations in flight by source (the
	// connections in busy that create a session, and their source in
	// creator), so that a source cannot pass its limit with creations
	// proposed at once. Bounded by busy.
	perSource map[string]int
	creating  map[string]int
	creator   map[ConnID]string
	// notes are the leader-only notifications being sent (notify.go).
	notes noteCursor
	// actors counts the session actors alive (entries with a pid);
	// spawns numbers their names, so that a new actor never takes the
	// name of one still stopping.
	actors int
	spawns uint64
}

// NewSessions returns the producer of the session directory.
func NewSessions(env *Env) actor.Producer {
	return func() actor.Actor {
		return &directory{
			env:       env,
			byConn:    make(map[ConnID]fsm.SessionID),
			bySession: make(map[fsm.SessionID]*entry),
			busy:      make(map[ConnID]time.Time),
			orphans:   make(map[ConnID]time.Time),
			unbound:   make(map[ConnID]time.Time),
			handover:  make(map[ConnID]struct{}),
			perSource: make(map[string]int),
			creating:  make(map[string]int),
			creator:   make(map[ConnID]string),
		}
	}
}

func (d *directory) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		// Bindings of a previous incarnation are gone with its maps.
		d.env.Inbox.Liveness().Clear()
		d.env.debug("directory: started, bindings cleared")
		d.tokens, d.refill = float64(d.env.Settings.SessionCreateRate), d.env.Now()
		// Learn the current leader: the bridge broadcasts only on changes.
		c.Request(d.env.Refs.Raft, &LeaderQuery{})
		d.armReaper(c)
	case *actor.Stopping, *actor.Restarting:
		d.env.Metrics.Sessions.Set(0)
		d.env.Metrics.SessionActors.Set(0)
		// The session actors stop with the directory: what their mailboxes
		// hold goes back to the node's byte budget.
		for _, e := range d.bySession {
			e.backlog.close()
		}
		if d.reaper != nil {
			d.reaper.Stop()
		}
	case *ConnOpened:
		if _, bound := d.byConn[m.Conn]; !bound {
			d.unbound[m.Conn] = d.env.Now()
		}
	case *reapTick:
		d.reap()
		d.armReaper(c)
	case *LeaderChanged:
		d.leaderChanged(c, m)
	case *Inbound:
		d.env.Inbox.handled(m.size)
		d.inbound(c, m)
	case *actor.Terminated:
		d.childStopped(m.Who)
	case *ConnGone:
		d.connGone(c, m.Conn)
	case *Proposed:
		if t, ok := m.Tag.(createTag); ok {
			d.created(c, t, m)
		}
	case *ReadDone:
		switch t := m.Tag.(type) {
		case continueTag:
			d.continued(c, t, m)
		case resyncTag:
			d.resynced(c, t, m)
		}
	case *sessionStarted:
		// A restarted actor (same pid) asks for its binding; one that
		// retired or was replaced meanwhile is not answered.
		if e := d.bySession[m.id]; e != nil && e.pid != nil && e.pid.Equal(c.Sender()) {
			d.sendBind(c, m.id, e)
		}
	case *retire:
		d.retire(c, m)
	case *Deliver:
		if e := d.bySession[m.Session]; e != nil {
			d.forward(c, m.Session, e, m)
		}
	case *DeliverBatch:
		for i := range m.Delivers {
			if e := d.bySession[m.Delivers[i].Session]; e != nil {
				d.forward(c, m.Delivers[i].Session, e, &m.Delivers[i])
			}
		}
	case *SessionRemoved:
		d.removed(c, m)
	case *notesReady:
		d.takeNotes(c, m)
	case *notesMore:
		d.moreNotes(c)
	case *Resync:
		for id, e := range d.bySession {
			if e.pid == nil {
				// No actor is spawned for the read: the directory reads
				// and spawns one only for a session with work pending.
				c.Send(d.env.Refs.Raft, &Read{Query: fsm.PendingQuery{Session: id}, ReplyTo: c.Self(), Tag: resyncTag{id: id}})
				continue
			}
			d.forward(c, id, e, m)
		}
	case *Drain:
		d.draining = true
		if c.Sender() != nil {
			c.Respond(&DrainStarted{})
		}
	case *Shutdown:
		d.shutdown(c, m)
	}
}

func (d *directory) leaderChanged(c actor.Context, m *LeaderChanged) {
	was := d.leader.IsLeader
	d.leader = *m
	if was && !m.IsLeader {
		// A leader that lost its term or its quorum stops serving at once:
		// every client is told where to go, and local session state is
		// dropped (it is rebuilt from the replicated state by whoever leads).
		now := d.env.Now()
		for id, e := range d.bySession {
			switch {
			case e.conn == 0:
			case d.draining:
				// Leadership was handed over because this node closes:
				// the client is told ShuttingDown with the new leader.
				d.handover[e.conn] = struct{}{}
			default:
				code, h := d.refusal()
				d.env.send(e.conn, &codec.SessionClosed{Reason: code, Leader: h})
				if m.LeaderID == 0 && len(d.orphans) < maxOrphans {
					d.orphans[e.conn] = now
				}
			}
			d.stopActor(c, e)
			e.backlog.close()
			delete(d.bySession, id)
		}
		clear(d.perSource)
		for conn := range d.byConn {
			d.unbound[conn] = now
		}
		clear(d.byConn)
		d.env.Inbox.Liveness().Clear()
		d.env.debug("directory: leadership lost, bindings cleared", "term", m.Term)
		clear(d.busy)
		clear(d.creating)
		clear(d.creator)
		d.env.Metrics.Sessions.Set(0)
	}
	if m.LeaderID != 0 && !m.IsLeader && len(d.handover) > 0 {
		d.handOver(d.hint())
	}
	if m.LeaderID != 0 && len(d.orphans) > 0 {
		now := d.env.Now()
		for conn, at := range d.orphans {
			if !m.IsLeader && now.Sub(at) < orphanTTL {
				d.env.send(conn, &codec.SessionClosed{Reason: codec.CodeNotLeader, Leader: d.hint(),
					Message: "the leader is now known"})
			}
		}
		clear(d.orphans)
	}
}

func (d *directory) hint() codec.LeaderHint {
	return codec.LeaderHint{ID: d.leader.Hint.ID, ClientAddr: d.leader.Hint.ClientAddr}
}

// refusal is the code and hint for a message this node does not serve
// because it does not lead: NotLeader with the leader's hint, or, with no
// leader known, ClusterUnavailable (which never carries a hint). A draining
// node says ShuttingDown, with the new leader's hint when it knows one.
func (d *directory) refusal() (codec.Code, codec.LeaderHint) {
	if d.draining {
		if d.leader.LeaderID != 0 && !d.leader.IsLeader {
			return codec.CodeShuttingDown, d.hint()
		}
		return codec.CodeShuttingDown, d.drainHint
	}
	if d.leader.LeaderID == 0 {
		return codec.CodeClusterUnavailable, codec.LeaderHint{}
	}
	return codec.CodeNotLeader, d.hint()
}

// handOver tells the connections waiting for the new leader where it is.
func (d *directory) handOver(h codec.LeaderHint) {
	for conn := range d.handover {
		d.env.send(conn, &codec.SessionClosed{Reason: codec.CodeShuttingDown, Leader: h,
			Message: "node shutting down; continue the session at the leader"})
	}
	clear(d.handover)
}

// inbound handles a client message or routes it to its session's actor.
func (d *directory) inbound(c actor.Context, in *Inbound) {
	if !d.leader.IsLeader {
		if _, waiting := d.handover[in.Conn]; waiting {
			// Told where to go as soon as the new leader is known.
			return
		}
		code, h := d.refusal()
		d.refuseWith(in, code, h, "")
		return
	}
	switch m := in.Msg.(type) {
	case *codec.CreateSession:
		d.create(c, in.Conn, m)
		return
	case *codec.ContinueSession:
		d.continueSession(c, in.Conn, m)
		return
	}
	id, ok := d.byConn[in.Conn]
	if !ok {
		d.env.debug("directory: message on an unbound connection", "conn", in.Conn, "kind", in.Msg.Kind())
		d.refuse(in, codec.CodeSessionNotFound, "connection is not bound to a session")
		return
	}
	e := d.bySession[id]
	// A client that sends faster than its session actor handles is
	// refused rather than queued without bound.
	// Its frames wait in the actor's mailbox holding their bytes of the
	// session's budget and the node's, as they do once proposed.
	if reason := e.backlog.add(int64(in.size), int64(d.env.Settings.MaxInFlight+backlogSlack),
		int64(d.env.Settings.MaxSessionBytes)); reason != "" {
		d.env.Metrics.Refused.WithLabelValues(reason).Inc()
		d.refuse(in, codec.CodeOverloaded, backlogText[reason])
		return
	}
	d.forward(c, id, e, &SessionMsg{Conn: in.Conn, Msg: in.Msg, size: in.size})
}

// spawn starts an actor for the session of entry e, either for the first
// time or after its last one retired; read says whether it must read its
// pending server requests from the replicated state.
func (d *directory) spawn(c actor.Context, id fsm.SessionID, e *entry, read bool) error {
	d.spawns++
	name := "session-" + id.String() + "-" + strconv.FormatUint(d.spawns, 36)
	// The directory and the actor address the actor through a copy of its
	// PID (protoactor names a child <parent id>/<name>), dropped when it
	// retires: the PID SpawnNamed returns stays in protoactor's set of
	// children (in spare capacity, after the child stopped), and a PID
	// through which a message was sent caches the process, so that one
	// would pin the stopped actor's memory until the slot is reused.
	self := actor.NewPID(c.Self().Address, c.Self().Id+"/"+name)
	boot := &sessionBoot{conn: e.conn, acked: e.acked, read: read, self: self}
	props := d.env.Props("session", newSession(d.env, e.info, e.backlog, boot))
	pid, err := c.SpawnNamed(props, name)
	if err != nil {
		return err
	}
	if !self.Equal(pid) {
		self = actor.NewPID(pid.Address, pid.Id)
	}
	e.pid, e.sent, e.mustRead = self, 0, false
	d.actors++
	d.env.Metrics.SessionActors.Set(float64(d.actors))
	return nil
}

// resyncTag names the directory's read of the pending server requests of a
// session that had no actor at a Resync.
type resyncTag struct{ id fsm.SessionID }

// resynced hands the pending server requests read at a Resync to the
// session's actor, spawning one if the session still has none; nothing is
// spawned when none is pending above what its last actor saw acknowledged.
// A failed read is left to an actor: spawned to read them itself (or told
// to read again, if one was spawned meanwhile).
func (d *directory) resynced(c actor.Context, t resyncTag, r *ReadDone) {
	e := d.bySession[t.id]
	if e == nil {
		return
	}
	if reason, gone := sessionGone(r.Err); gone {
		d.removed(c, &SessionRemoved{Session: t.id, Reason: reason})
		return
	}
	if r.Err != nil {
		if e.pid == nil {
			e.mustRead = true
			if err := d.spawn(c, t.id, e, true); err != nil {
				d.lost(t.id, e, err)
			}
			return
		}
		d.forward(c, t.id, e, &Resync{})
		return
	}
	reqs, _ := r.Result.([]fsm.ServerRequest)
	if e.pid == nil {
		reqs = slices.DeleteFunc(slices.Clone(reqs), func(q fsm.ServerRequest) bool { return q.ID <= e.acked })
	}
	if len(reqs) > 0 {
		d.forward(c, t.id, e, &Deliver{Session: t.id, Reqs: reqs})
	}
}

// forward sends m to the session's actor, spawning one first if the
// session has none (it retired). It reports false if no actor could be
// spawned: then the session is dropped here and its client told to
// continue it (see lost).
func (d *directory) forward(c actor.Context, id fsm.SessionID, e *entry, m any) bool {
	if e.pid == nil {
		if err := d.spawn(c, id, e, e.mustRead); err != nil {
			d.lost(id, e, err)
			return false
		}
	}
	e.sent++
	c.Send(e.pid, m)
	return true
}

// sendBind tells the session's actor its connection. A session with no
// actor and no connection needs no actor for that: its next one starts
// unbound anyway. It reports false if no actor could be spawned (the
// session is then dropped, see lost).
func (d *directory) sendBind(c actor.Context, id fsm.SessionID, e *entry) bool {
	if e.pid == nil && e.conn == 0 {
		return true
	}
	if e.pid == nil {
		if err := d.spawn(c, id, e, e.mustRead); err != nil {
			d.lost(id, e, err)
			return false
		}
	}
	e.sent++
	c.Send(e.pid, &bind{conn: e.conn, seq: e.sent})
	return true
}

// retire stops an idle session actor that asked to retire, if the
// directory forwarded it nothing it had not handled when it asked; the
// entry stays, with no actor. Otherwise the request is ignored and the
// actor, busy again, asks again when next idle.
func (d *directory) retire(c actor.Context, m *retire) {
	e := d.bySession[m.id]
	if e == nil || e.pid == nil || !e.pid.Equal(c.Sender()) {
		return
	}
	if e.sent != m.handled {
		d.env.debug("directory: session actor retirement declined", "session", m.id,
			"forwarded", e.sent, "handled", m.handled)
		return
	}
	e.acked = m.acked
	d.stopActor(c, e)
	d.env.debug("directory: session actor retired", "session", m.id)
}

// stopActor stops the session's actor, if it has one; its Terminated is
// then ignored (childStopped).
func (d *directory) stopActor(c actor.Context, e *entry) {
	if e.pid == nil {
		return
	}
	c.Stop(e.pid)
	e.pid = nil
	d.actors--
	d.env.Metrics.SessionActors.Set(float64(d.actors))
}

// lost drops a session whose actor stopped for good or could not be
// spawned: its client is told, continues its session, and gets a fresh
// actor rebuilt from the replicated state.
func (d *directory) lost(id fsm.SessionID, e *entry, why any) {
	d.env.debug("directory: session actor lost", "session", id, "conn", e.conn, "why", why)
	if e.conn != 0 {
		d.env.send(e.conn, &codec.SessionClosed{Reason: codec.CodeSessionNotFound, Leader: d.hint(),
			Message: "session actor stopped; continue the session"})
		d.unbind(e.conn)
	}
	if e.pid != nil {
		e.pid = nil
		d.actors--
		d.env.Metrics.SessionActors.Set(float64(d.actors))
	}
	d.forget(id, e)
}

// childStopped forgets a session whose actor stopped for good (its
// supervisor gave up on it): its client is told, continues its session, and
// gets a fresh actor rebuilt from the replicated state. The Terminated of an
// actor the directory stopped itself (retired, or its session dropped) finds
// no entry holding that pid and is ignored.
func (d *directory) childStopped(pid *actor.PID) {
	if pid == nil {
		return
	}
	if id, ok := sessionOfActor(pid); ok {
		if e := d.bySession[id]; e != nil && e.pid != nil && e.pid.Equal(pid) {
			d.lost(id, e, "supervisor gave up")
		}
		return
	}
	for id, e := range d.bySession {
		if e.pid != nil && e.pid.Equal(pid) {
			d.lost(id, e, "supervisor gave up")
			return
		}
	}
}

// sessionOfActor reads the session id out of a session actor's name,
// "session-<id>-<n>" after the directory's path.
func sessionOfActor(pid *actor.PID) (fsm.SessionID, bool) {
	name := pid.Id
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	rest, ok := strings.CutPrefix(name, "session-")
	if !ok {
		return fsm.SessionID{}, false
	}
	hexID, _, _ := strings.Cut(rest, "-")
	id, err := fsm.ParseSessionID(hexID)
	return id, err == nil
}

// forget removes a session's entry and its count against its source.
func (d *directory) forget(id fsm.SessionID, e *entry) {
	e.backlog.close()
	d.setSource(e, "")
	delete(d.bySession, id)
	d.env.Metrics.Sessions.Set(float64(len(d.bySession)))
}

// setSource moves a session's count from its source to src ("": none).
func (d *directory) setSource(e *entry, src string) {
	if e.source == src {
		return
	}
	if e.source != "" {
		if d.perSource[e.source]--; d.perSource[e.source] <= 0 {
			delete(d.perSource, e.source)
		}
	}
	if src != "" {
		d.perSource[src]++
	}
	e.source = src
}

// sourceFull reports whether conn's source already has
// MaxSessionsPerSource sessions here, not counting session id (the one
// being continued, when it is counted against that source already).
func (d *directory) sourceFull(conn ConnID, id fsm.SessionID) bool {
	max := d.env.Settings.MaxSessionsPerSource
	src := d.env.Inbox.Source(conn)
	if max <= 0 || src == "" {
		return false
	}
	if e := d.bySession[id]; e != nil && e.source == src {
		return false
	}
	return d.perSource[src]+d.creating[src] >= max
}

// markCreating marks conn busy with a session creation from its source.
func (d *directory) markCreating(conn ConnID) {
	d.notBusy(conn)
	d.busy[conn] = d.env.Now()
	if src := d.env.Inbox.Source(conn); src != "" {
		d.creator[conn] = src
		d.creating[src]++
	}
}

// notBusy ends conn's creation or continuation in progress, if any.
func (d *directory) notBusy(conn ConnID) {
	delete(d.busy, conn)
	if src, ok := d.creator[conn]; ok {
		delete(d.creator, conn)
		if d.creating[src]--; d.creating[src] <= 0 {
			delete(d.creating, src)
		}
	}
}

// backlogText is the message of an Overloaded for each backlog bound.
var backlogText = map[string]string{
	"backlog":       "session backlog full",
	"session_bytes": "the session's bytes waiting are at max_session_bytes",
	"node_bytes":    "the node's command and query bytes are at max_proposal_bytes",
}

// perSourceText is the message of a TooManySessions for the per-source
// limit.
const perSourceText = "this source holds max_sessions_per_source sessions on the leader"

// refuse answers a message this node will not serve, in the form the client
// expects for its kind.
func (d *directory) refuse(in *Inbound, code codec.Code, msg string) {
	d.refuseWith(in, code, d.hint(), msg)
}

func (d *directory) refuseWith(in *Inbound, code codec.Code, h codec.LeaderHint, msg string) {
	switch m := in.Msg.(type) {
	case *codec.CreateSession:
		d.env.send(in.Conn, &codec.SessionRejected{Nonce: m.Nonce, Reason: code, Leader: h, Message: msg})
	case *codec.ContinueSession:
		d.env.send(in.Conn, &codec.SessionRejected{Nonce: m.Nonce, Reason: code, Leader: h, Message: msg})
	case *codec.ClientRequest:
		if code == codec.CodeSessionNotFound {
			d.env.send(in.Conn, &codec.SessionClosed{Reason: code, Leader: h, Message: msg})
			return
		}
		d.env.send(in.Conn, &codec.RequestError{RequestID: m.RequestID, Reason: code, Leader: h, Message: msg})
	case *codec.Query:
		if code == codec.CodeSessionNotFound {
			d.env.send(in.Conn, &codec.SessionClosed{Reason: code, Leader: h, Message: msg})
			return
		}
		d.env.send(in.Conn, &codec.QueryError{CorrelationID: m.CorrelationID, Reason: code, Leader: h, Message: msg})
	case *codec.KeepAlive, *codec.ServerRequestAck:
		if code == codec.CodeOverloaded {
			// Dropped: the next keep-alive or cumulative ack covers it.
			return
		}
		d.env.send(in.Conn, &codec.SessionClosed{Reason: code, Leader: h, Message: msg})
	default:
		d.env.send(in.Conn, &codec.SessionClosed{Reason: code, Leader: h, Message: msg})
	}
}

func (d *directory) isBusy(conn ConnID) bool {
	at, ok := d.busy[conn]
	return ok && d.env.Now().Sub(at) < 2*d.env.Settings.ProposalTimeout
}

// allowCreate applies the node's session-creation rate limit (a token bucket
// refilled at SessionCreateRate per second, burst of the same size).
func (d *directory) allowCreate() bool {
	rate := float64(d.env.Settings.SessionCreateRate)
	now := d.env.Now()
	d.tokens = min(rate, d.tokens+now.Sub(d.refill).Seconds()*rate)
	d.refill = now
	if d.tokens < 1 {
		return false
	}
	d.tokens--
	return true
}

func (d *directory) create(c actor.Context, conn ConnID, m *codec.CreateSession) {
	reject := func(code codec.Code, msg string) {
		d.env.send(conn, &codec.SessionRejected{Nonce: m.Nonce, Reason: code, Leader: d.hint(), Message: msg})
	}
	if _, bound := d.byConn[conn]; bound {
		reject(codec.CodeUnsupported, "connection is already bound to a session")
		return
	}
	if d.isBusy(conn) {
		reject(codec.CodeOverloaded, "a session request is already in progress on this connection")
		return
	}
	if d.sourceFull(conn, fsm.SessionID{}) {
		d.env.Metrics.SessionsRefused.WithLabelValues("per_source").Inc()
		reject(codec.CodeTooManySessions, perSourceText)
		return
	}
	if !d.allowCreate() {
		d.env.Metrics.SessionsRefused.WithLabelValues("rate").Inc()
		reject(codec.CodeRateLimited, "session creation rate limit reached (session_create_rate)")
		return
	}
	d.markCreating(conn)
	d.proposeOpen(c, createTag{conn: conn, nonce: m.Nonce, msg: m})
}

// proposeOpen proposes the creation with a fresh random session id.
func (d *directory) proposeOpen(c actor.Context, t createTag) {
	var id fsm.SessionID
	if _, err := rand.Read(id[:]); err != nil {
		d.notBusy(t.conn)
		d.env.send(t.conn, &codec.SessionRejected{Nonce: t.nonce, Reason: codec.CodeInternal, Leader: d.hint(),
			Message: "no randomness for a session id"})
		return
	}
	caps := make([]fsm.Capability, len(t.msg.Capabilities))
	for i, cp := range t.msg.Capabilities {
		caps[i] = fsm.Capability{Name: cp.Name, Value: cp.Value}
	}
	cmd := fsm.EncodeCommand(nil, fsm.OpenSession{
		Time:         fsm.Stamp(d.env.Now()),
		ID:           id,
		SecretHash:   fsm.SecretHash(sha256.Sum256(t.msg.Secret[:])),
		Nonce:        t.nonce,
		Capabilities: caps,
		Timeout:      d.env.Settings.SessionTimeout,
	})
	c.Send(d.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: t})
}

func (d *directory) created(c actor.Context, t createTag, p *Proposed) {
	d.notBusy(t.conn)
	reject := func(code codec.Code, msg string) {
		d.env.send(t.conn, &codec.SessionRejected{Nonce: t.nonce, Reason: code, Leader: d.hint(), Message: msg})
	}
	if p.Err != nil {
		reject(errCode(p.Err), p.Err.Error())
		return
	}
	if !d.leader.IsLeader {
		code, h := d.refusal()
		d.env.send(t.conn, &codec.SessionRejected{Nonce: t.nonce, Reason: code, Leader: h, Message: "leadership changed"})
		return
	}
	out, err := fsm.DecodeResult(fsm.Result{Value: p.Value, Data: p.Data})
	if err != nil {
		reject(codec.CodeInternal, err.Error())
		return
	}
	switch out.Status {
	case fsm.StatusSessionOpened, fsm.StatusSessionExisting:
	case fsm.StatusSessionRejected:
		reject(codec.CodeRejected, out.Message)
		return
	case fsm.StatusTooManySessions:
		d.env.Metrics.SessionsRefused.WithLabelValues("max_sessions").Inc()
		reject(codec.CodeTooManySessions, "the cluster's session limit is reached")
		return
	case fsm.StatusSessionExists:
		if t.attempt+1 < maxIDAttempts {
			t.attempt++
			d.markCreating(t.conn)
			d.proposeOpen(c, t)
			return
		}
		reject(codec.CodeInternal, "session id collided repeatedly")
		return
	case fsm.StatusInvalid:
		// The state machine refused the request's form (the wire limits
		// are the state machine's, so this is not a size): Malformed, as
		// for a frame that did not decode. Rejected is the application's.
		reject(codec.CodeMalformed, out.Message)
		return
	default:
		reject(codec.CodeInternal, out.Status.String())
		return
	}
	// The session's details (secret hash, timeout) are read back by the
	// session actor when it needs them; the directory binds it now.
	if !d.bindSession(c, t.conn, t.nonce, fsm.SessionInfo{ID: out.Session, Timeout: d.env.Settings.SessionTimeout}) {
		return
	}
	d.env.send(t.conn, &codec.SessionCreated{
		SessionID:         codec.SessionID(out.Session),
		Nonce:             t.nonce,
		KeepAliveInterval: d.env.Settings.KeepAliveInterval,
		SessionTimeout:    d.env.Settings.SessionTimeout,
		LeaderID:          d.env.Settings.NodeID,
		Members:           d.members(),
	})
}

func (d *directory) members() []codec.Member {
	dir := d.env.members()
	ms := make([]codec.Member, len(dir))
	for i, m := range dir {
		ms[i] = codec.Member{ID: m.ID, ClientAddr: m.ClientAddr}
	}
	codec.SortMembers(ms)
	return ms
}

func (d *directory) continueSession(c actor.Context, conn ConnID, m *codec.ContinueSession) {
	if d.isBusy(conn) {
		d.env.send(conn, &codec.SessionRejected{Nonce: m.Nonce, Reason: codec.CodeOverloaded, Leader: d.hint(),
			Message: "a session request is already in progress on this connection"})
		return
	}
	// The secret is checked against the replicated hash read through Raft
	// (ReadIndex), so a session created just before a leader change is found
	// and a closed one is not.
	d.busy[conn] = d.env.Now()
	id := fsm.SessionID(m.SessionID)
	c.Send(d.env.Refs.Raft, &Read{Query: fsm.SessionQuery{ID: id}, ReplyTo: c.Self(),
		Tag: continueTag{conn: conn, id: id, hash: fsm.SecretHash(sha256.Sum256(m.Secret[:])), nonce: m.Nonce}})
}

func (d *directory) continued(c actor.Context, t continueTag, r *ReadDone) {
	d.notBusy(t.conn)
	reject := func(code codec.Code, msg string) {
		d.env.send(t.conn, &codec.SessionRejected{Nonce: t.nonce, Reason: code, Leader: d.hint(), Message: msg})
	}
	if r.Err != nil {
		reject(errCode(r.Err), r.Err.Error())
		return
	}
	if !d.leader.IsLeader {
		code, h := d.refusal()
		d.env.send(t.conn, &codec.SessionRejected{Nonce: t.nonce, Reason: code, Leader: h, Message: "leadership changed"})
		return
	}
	info, ok := r.Result.(fsm.SessionInfo)
	if !ok {
		reject(codec.CodeSessionNotFound, "no such session")
		return
	}
	if subtle.ConstantTimeCompare(info.SecretHash[:], t.hash[:]) != 1 {
		reject(codec.CodeBadSecret, "secret does not match")
		return
	}
	if d.sourceFull(t.conn, info.ID) {
		d.env.Metrics.SessionsRefused.WithLabelValues("per_source").Inc()
		reject(codec.CodeTooManySessions, perSourceText)
		return
	}
	if d.bindSession(c, t.conn, t.nonce, info) {
		d.env.send(t.conn, &codec.SessionContinued{Nonce: t.nonce})
	}
}

type reapTick struct{}

func (d *directory) armReaper(c actor.Context) {
	system, self := c.ActorSystem(), c.Self()
	d.reaper = time.AfterFunc(d.env.Settings.KeepAliveInterval, func() { system.Root.Send(self, &reapTick{}) })
}

// reap closes connections that stayed unbound for a session timeout.
func (d *directory) reap() {
	now := d.env.Now()
	for conn, since := range d.unbound {
		if now.Sub(since) > d.env.Settings.SessionTimeout {
			delete(d.unbound, conn)
			_ = d.env.Conns.CloseConn(conn)
		}
	}
}

// unbind marks conn as bound to no session from now on.
func (d *directory) unbind(conn ConnID) {
	d.env.debug("directory: unbind", "conn", conn, "session", d.byConn[conn])
	delete(d.byConn, conn)
	d.env.Inbox.Liveness().Unbind(conn)
	d.unbound[conn] = d.env.Now()
}

// bindSession binds conn to the session, spawning its actor if needed and
// cutting the connection it was bound to before. It reports false (and has
// rejected the request carrying nonce) when the actor could not be spawned.
func (d *directory) bindSession(c actor.Context, conn ConnID, nonce uint64, info fsm.SessionInfo) bool {
	if old, ok := d.byConn[conn]; ok && old != info.ID {
		// The connection moves to another session: unbind it from the old.
		if e := d.bySession[old]; e != nil {
			e.conn = 0
			d.sendBind(c, old, e)
		}
	}
	e := d.bySession[info.ID]
	fresh := e == nil
	if fresh {
		e = &entry{info: info, conn: conn, backlog: newBacklog(d.env.Bytes)}
		if err := d.spawn(c, info.ID, e, true); err != nil {
			e.backlog.close()
			d.env.send(conn, &codec.SessionRejected{Nonce: nonce, Reason: codec.CodeOverloaded, Leader: d.hint(), Message: err.Error()})
			return false
		}
		d.bySession[info.ID] = e
		d.env.Metrics.Sessions.Set(float64(len(d.bySession)))
		c.Send(d.env.Refs.KeepAlive, &Seen{Session: info.ID, Timeout: info.Timeout})
	}
	if e.conn != 0 && e.conn != conn {
		d.env.send(e.conn, &codec.SessionClosed{Reason: codec.CodeSessionMoved, Leader: d.hint(),
			Message: "session continued on another connection"})
		d.unbind(e.conn)
	}
	e.conn = conn
	d.setSource(e, d.env.Inbox.Source(conn))
	d.byConn[conn] = info.ID
	d.env.Inbox.Liveness().Bind(conn, info.ID, info.Timeout, d.env.Now())
	d.env.debug("directory: bind", "conn", conn, "session", info.ID)
	delete(d.unbound, conn)
	if !fresh {
		// A fresh actor was spawned knowing its connection.
		return d.sendBind(c, info.ID, e)
	}
	return true
}

func (d *directory) connGone(c actor.Context, conn ConnID) {
	d.notBusy(conn)
	delete(d.orphans, conn)
	delete(d.unbound, conn)
	delete(d.handover, conn)
	id, ok := d.byConn[conn]
	if !ok {
		return
	}
	delete(d.byConn, conn)
	d.env.Inbox.Liveness().Unbind(conn)
	d.env.debug("directory: connection gone", "conn", conn, "session", id)
	if e := d.bySession[id]; e != nil && e.conn == conn {
		e.conn = 0
		d.sendBind(c, id, e)
	}
}

func (d *directory) removed(c actor.Context, m *SessionRemoved) {
	e := d.bySession[m.Session]
	d.env.debug("directory: session removed", "session", m.Session, "reason", m.Reason, "here", e != nil)
	if e == nil {
		return
	}
	if e.conn != 0 {
		code := codec.CodeSessionExpired
		if m.Reason == fsm.RemovedClosed {
			code = codec.CodeClientClosed
		}
		d.env.send(e.conn, &codec.SessionClosed{Reason: code, Message: "session " + m.Reason.String()})
		d.unbind(e.conn)
	}
	d.stopActor(c, e)
	d.forget(m.Session, e)
}

func (d *directory) shutdown(c actor.Context, m *Shutdown) {
	h := codec.LeaderHint{ID: m.Hint.ID, ClientAddr: m.Hint.ClientAddr}
	if h.ID == 0 && d.leader.LeaderID != 0 && !d.leader.IsLeader {
		h = d.hint()
	}
	for conn := range d.byConn {
		d.env.send(conn, &codec.SessionClosed{Reason: codec.CodeShuttingDown, Leader: h, Message: "node shutting down"})
	}
	clear(d.byConn)
	d.env.Inbox.Liveness().Clear()
	d.handOver(h)
	d.draining, d.drainHint = true, h
	for id, e := range d.bySession {
		d.stopActor(c, e)
		e.backlog.close()
		delete(d.bySession, id)
	}
	clear(d.perSource)
	d.leader = LeaderChanged{}
	if c.Sender() != nil {
		c.Respond(&ShutdownDone{})
	}
}

// errCode maps a bridge error to the wire code a client acts on.
func errCode(err error) codec.Code {
	switch {
	case errors.Is(err, ErrOverloaded):
		return codec.CodeOverloaded
	case errors.Is(err, ErrOutcomeUnknown):
		return codec.CodeOutcomeUnknown
	case errors.Is(err, ErrUnavailable):
		return codec.CodeClusterUnavailable
	case errors.Is(err, fsm.ErrSessionNotFound), errors.Is(err, fsm.ErrSessionClosed):
		return codec.CodeSessionNotFound
	case errors.Is(err, fsm.ErrSessionExpired):
		return codec.CodeSessionExpired
	default:
		return codec.CodeInternal
	}
}
