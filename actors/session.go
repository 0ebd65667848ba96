// session: one actor per live session served by this node (the leader).
//
// Owns: the session's current connection (0 while none), its requests in
// flight (at most MaxInFlight; past that the client gets TooManyInFlight),
// and delivery of its server-initiated requests: each is sent on arrival,
// sent again at once when the session is bound to a new connection, and
// retried RedeliverInterval after its latest send, then after doubling
// intervals up to 16 times RedeliverInterval, until the client acknowledges
// it. It reports liveness to the keepalive actor on
// every keep-alive and, at most once per keep-alive interval, on any other
// valid message.
//
// Spawned by the sessions directory when a session is created or continued
// here, supervised by it, stopped when the session is removed, leadership is
// lost, or the node shuts down. On restart it asks the directory for its
// connection and reads its pending server requests back from the replicated
// state; requests that were in flight complete on the bridge's goroutines and
// their replies reach the restarted actor, which forwards them; any reply
// lost in between is covered by the client resending the same request id,
// which the state machine answers from its cache.
package actors

import (
	"cmp"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

// Seen reports to the keepalive actor that a session showed signs of life.
type Seen struct {
	Session fsm.SessionID
	Timeout time.Duration // the session's timeout; 0 when already tracked
}

type requestTag struct{ id uint64 }

type queryTag struct{ id uint64 }

type pendingTag struct{}

type closeTag struct{}

// redeliverTick fires the redelivery timer of generation gen; a tick of a
// timer that was replaced is ignored.
type redeliverTick struct{ gen uint64 }

type outgoing struct {
	req      fsm.ServerRequest
	sentAt   time.Time
	attempts int
}

type session struct {
	env     *Env
	id      fsm.SessionID
	timeout time.Duration
	conn    ConnID
	// inFlight maps request ids awaiting their proposal's outcome to when
	// they were proposed. An entry whose reply was lost (a bridge restart
	// drops the message it was handling) is forgotten after twice the
	// proposal timeout, so lost replies cannot use up the bound.
	inFlight map[uint64]time.Time
	pending  []outgoing // ordered by id, ids strictly increasing
	acked    uint64
	reported time.Time
	timer    *time.Timer
	timerDue time.Time // when timer fires
	timerGen uint64    // generation of timer, carried by its tick
	backlog  *atomic.Int64
}

// NewSession returns the producer of a session actor. backlog is shared
// with the directory, which counts the messages it forwards.
func NewSession(env *Env, info fsm.SessionInfo, backlog *atomic.Int64) actor.Producer {
	return func() actor.Actor {
		return &session{env: env, id: info.ID, timeout: info.Timeout, inFlight: make(map[uint64]time.Time), backlog: backlog}
	}
}

func (s *session) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		c.Request(c.Parent(), &sessionStarted{id: s.id})
		c.Send(s.env.Refs.Raft, &Read{Query: fsm.PendingQuery{Session: s.id}, ReplyTo: c.Self(), Tag: pendingTag{}})
	case *actor.Stopping, *actor.Restarting:
		if s.timer != nil {
			s.timer.Stop()
		}
	case *bind:
		s.conn = m.conn
		if s.conn != 0 {
			// A continuation is a sign of life at most once per
			// keep-alive interval, like any message but a keep-alive, so
			// that cycling ContinueSession cannot stand in for them.
			s.seen(c, false)
			for i := range s.pending {
				s.deliver(&s.pending[i])
			}
			s.arm(c)
		}
	case *SessionMsg:
		s.backlog.Add(-1)
		s.message(c, m)
	case *Proposed:
		s.proposed(m)
	case *ReadDone:
		s.readDone(c, m)
	case *Deliver:
		s.add(c, m.Reqs)
	case *Resync:
		c.Send(s.env.Refs.Raft, &Read{Query: fsm.PendingQuery{Session: s.id}, ReplyTo: c.Self(), Tag: pendingTag{}})
	case *redeliverTick:
		if m.gen != s.timerGen {
			return
		}
		s.timer = nil
		s.redeliver(c)
	}
}

// seen reports liveness; always for keep-alives, otherwise at most once per
// keep-alive interval so that busy sessions do not flood the tracker.
func (s *session) seen(c actor.Context, force bool) {
	now := s.env.Now()
	if !force && now.Sub(s.reported) < s.env.Settings.KeepAliveInterval {
		return
	}
	s.reported = now
	c.Send(s.env.Refs.KeepAlive, &Seen{Session: s.id, Timeout: s.timeout})
}

func (s *session) message(c actor.Context, in *SessionMsg) {
	switch m := in.Msg.(type) {
	case *codec.KeepAlive:
		s.env.send(in.Conn, &codec.KeepAliveResponse{Timestamp: m.Timestamp})
		s.seen(c, true)
		s.ack(c, m.AckedUpTo)
	case *codec.ClientRequest:
		s.seen(c, false)
		if !s.admit(m.RequestID, m.LowestPending) {
			s.env.send(in.Conn, &codec.RequestError{RequestID: m.RequestID, Reason: codec.CodeTooManyInFlight,
				Message: "too many requests in flight for this session"})
			return
		}
		s.env.Work.ProposeRequest(c.ActorSystem(), fsm.ClientRequest{
			Session: s.id, RequestID: m.RequestID, LowestPending: m.LowestPending, Payload: m.Payload,
		}, c.Self(), requestTag{id: m.RequestID})
	case *codec.Query:
		s.seen(c, false)
		if !m.Consistency.Known() {
			// §7: consistency levels may be added within version 1; a
			// level this node does not serve is refused, never guessed.
			s.env.send(in.Conn, &codec.QueryError{CorrelationID: m.CorrelationID, Reason: codec.CodeUnsupported,
				Message: "consistency " + m.Consistency.String() + " is not supported"})
			return
		}
		s.env.Work.Read(c.ActorSystem(), m.Payload, m.Consistency == codec.Stale, c.Self(), queryTag{id: m.CorrelationID})
	case *codec.ServerRequestAck:
		s.seen(c, false)
		s.ack(c, m.RequestID)
	case *codec.CloseSession:
		cmd := fsm.EncodeCommand(nil, fsm.CloseSession{Time: fsm.Stamp(s.env.Now()), Session: s.id})
		c.Send(s.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: closeTag{}})
	}
}

func (s *session) proposed(p *Proposed) {
	switch t := p.Tag.(type) {
	case requestTag:
		delete(s.inFlight, t.id)
		if s.conn == 0 {
			// The client resends on reconnect and the cache answers.
			return
		}
		s.env.send(s.conn, requestReply(t.id, p))
	case closeTag:
		if p.Err != nil && s.conn != 0 {
			// The session stays; the client may close again or let it expire.
			s.env.send(s.conn, &codec.SessionClosed{Reason: errCode(p.Err), Message: "close failed: " + p.Err.Error()})
		}
		// On success the state machine's removal notice reaches the
		// directory, which tells the client and stops this actor.
	}
}

// admit records a request as in flight, or reports that the session's bound
// is reached even after forgetting entries whose replies were lost. The
// session's lowest unanswered request (its id is its own lowest pending id)
// gets one slot above the bound: the state machine runs a session's requests
// in id order, so later ones filling the bound while it is refused would
// wait for it forever. One slot, not one per such request, so a client that
// lies about its lowest pending id cannot grow the table past MaxInFlight+1.
func (s *session) admit(id, lowest uint64) bool {
	now := s.env.Now()
	limit := s.env.Settings.MaxInFlight
	if id == lowest {
		limit++
	}
	if _, again := s.inFlight[id]; !again && len(s.inFlight) >= limit {
		for rid, at := range s.inFlight {
			if now.Sub(at) > 2*s.env.Settings.ProposalTimeout {
				delete(s.inFlight, rid)
			}
		}
		if len(s.inFlight) >= limit {
			return false
		}
	}
	s.inFlight[id] = now
	return true
}

// requestReply maps a proposal's outcome to the reply the client gets.
func requestReply(id uint64, p *Proposed) codec.Message {
	if p.Err != nil {
		return &codec.RequestError{RequestID: id, Reason: errCode(p.Err), Message: p.Err.Error()}
	}
	out, err := fsm.DecodeResult(fsm.Result{Value: p.Value, Data: p.Data})
	if err != nil {
		return &codec.RequestError{RequestID: id, Reason: codec.CodeInternal, Message: err.Error()}
	}
	code := codec.CodeInternal
	switch out.Status {
	case fsm.StatusOK:
		return &codec.ClientResponse{RequestID: id, Result: out.Payload}
	case fsm.StatusAppError:
		return &codec.RequestError{RequestID: id, Reason: codec.CodeApplication, AppCode: out.AppCode, Message: out.Message}
	case fsm.StatusSessionNotFound, fsm.StatusSessionClosed:
		code = codec.CodeSessionNotFound
	case fsm.StatusSessionExpired:
		code = codec.CodeSessionExpired
	case fsm.StatusResponseEvicted:
		code = codec.CodeResponseEvicted
	case fsm.StatusTooManyInFlight:
		code = codec.CodeTooManyInFlight
	case fsm.StatusOutOfOrder:
		code = codec.CodeOutOfOrder
	case fsm.StatusResultTooLarge:
		code = codec.CodeTooLarge
	case fsm.StatusInvalid:
		code = codec.CodeMalformed
	}
	return &codec.RequestError{RequestID: id, Reason: code, Message: out.Status.String() + " " + out.Message}
}

func (s *session) readDone(c actor.Context, r *ReadDone) {
	switch t := r.Tag.(type) {
	case queryTag:
		if s.conn == 0 {
			return
		}
		if r.Err != nil {
			code, appCode := errCode(r.Err), uint32(0)
			var ae interface{ AppCode() uint32 }
			if errors.As(r.Err, &ae) {
				code, appCode = codec.CodeApplication, ae.AppCode()
			}
			s.env.send(s.conn, &codec.QueryError{CorrelationID: t.id, Reason: code, AppCode: appCode, Message: r.Err.Error()})
			return
		}
		res, _ := r.Result.([]byte)
		s.env.send(s.conn, &codec.QueryResponse{CorrelationID: t.id, Result: res})
	case pendingTag:
		if reason, gone := sessionGone(r.Err); gone {
			// The session ended in the replicated state (for example an
			// expiry that raced this session's continuation, or a removal
			// notice the relay had to drop): the directory removes it and
			// tells the client.
			c.Send(c.Parent(), &SessionRemoved{Session: s.id, Reason: reason})
			return
		}
		if r.Err != nil {
			// Delivery resumes when the dispatcher hands over new work or
			// the session is continued; a failed read loses nothing.
			s.env.Log.Debug("read pending server requests", "session", s.id, "err", r.Err)
			return
		}
		if reqs, ok := r.Result.([]fsm.ServerRequest); ok {
			s.add(c, reqs)
		}
	}
}

// sessionGone reports whether err says the session no longer exists in the
// replicated state, and why.
func sessionGone(err error) (fsm.RemoveReason, bool) {
	switch {
	case errors.Is(err, fsm.ErrSessionExpired):
		return fsm.RemovedExpired, true
	case errors.Is(err, fsm.ErrSessionClosed), errors.Is(err, fsm.ErrSessionNotFound):
		return fsm.RemovedClosed, true
	}
	return 0, false
}

// add queues server requests the session does not have yet and sends them.
// Requests may arrive out of order (a notice of new work can overtake the
// read of older pending work), so they are merged by id.
func (s *session) add(c actor.Context, reqs []fsm.ServerRequest) {
	var added []int
	s.pending, added = mergePending(s.pending, s.acked, reqs)
	for _, i := range added {
		s.deliver(&s.pending[i])
	}
	s.arm(c)
}

// mergePending inserts the requests above acked that pending lacks, keeping
// pending sorted by id, and returns where the new ones ended up.
func mergePending(pending []outgoing, acked uint64, reqs []fsm.ServerRequest) ([]outgoing, []int) {
	var fresh []fsm.ServerRequest
	for _, r := range reqs {
		if r.ID <= acked {
			continue
		}
		i, found := slices.BinarySearchFunc(pending, r.ID, func(o outgoing, id uint64) int { return cmp.Compare(o.req.ID, id) })
		if found {
			continue
		}
		pending = slices.Insert(pending, i, outgoing{req: r})
		fresh = append(fresh, r)
	}
	added := make([]int, 0, len(fresh))
	for _, r := range fresh {
		i, _ := slices.BinarySearchFunc(pending, r.ID, func(o outgoing, id uint64) int { return cmp.Compare(o.req.ID, id) })
		added = append(added, i)
	}
	return pending, added
}

func (s *session) deliver(o *outgoing) {
	if s.conn == 0 {
		return
	}
	if o.attempts > 0 {
		s.env.Metrics.Redeliveries.Inc()
	}
	o.attempts++
	o.sentAt = s.env.Now()
	s.env.send(s.conn, &codec.ServerRequest{RequestID: o.req.ID, CreatedAt: o.req.CreatedAt.UnixNano(), Payload: o.req.Payload})
}

// ack drops every pending request up to upTo and has the dispatcher record
// the acknowledgement in the replicated state.
func (s *session) ack(c actor.Context, upTo uint64) {
	if upTo <= s.acked {
		return
	}
	s.acked = upTo
	i := 0
	for i < len(s.pending) && s.pending[i].req.ID <= upTo {
		i++
	}
	s.pending = s.pending[i:]
	c.Send(s.env.Refs.Dispatcher, &Acked{Session: s.id, UpTo: upTo})
}

// redeliverAfter is how long after its latest send a request is sent
// again: RedeliverInterval after the first send, then doubling up to 16
// times RedeliverInterval (1, 2, 4, 8, 16, 16, ... intervals).
func redeliverAfter(interval time.Duration, attempts int) time.Duration {
	return interval << min(max(attempts-1, 0), 4)
}

// nextRedelivery is when the earliest pending request is due again; ok is
// false when nothing is pending. Work queued while no connection was bound
// (attempts 0) is sent on the next bind, not by the timer.
func nextRedelivery(pending []outgoing, interval time.Duration) (due time.Time, ok bool) {
	for i := range pending {
		o := &pending[i]
		if o.attempts == 0 {
			continue
		}
		d := o.sentAt.Add(redeliverAfter(interval, o.attempts))
		if !ok || d.Before(due) {
			due, ok = d, true
		}
	}
	return due, ok
}

// arm sets the redelivery timer for the earliest due request, so that each
// request is redelivered on its own schedule (not on a shared tick, which
// would delay a request sent between two ticks by up to one more interval).
func (s *session) arm(c actor.Context) {
	due, ok := nextRedelivery(s.pending, s.env.Settings.RedeliverInterval)
	if !ok {
		return
	}
	if s.timer != nil {
		if !s.timerDue.After(due) {
			return
		}
		s.timer.Stop()
	}
	system, self := c.ActorSystem(), c.Self()
	s.timerGen++
	s.timerDue = due
	tick := &redeliverTick{gen: s.timerGen}
	s.timer = time.AfterFunc(max(due.Sub(s.env.Now()), 0), func() { system.Root.Send(self, tick) })
}

func (s *session) redeliver(c actor.Context) {
	if s.conn == 0 {
		// Everything pending is sent again when a connection is bound.
		return
	}
	now := s.env.Now()
	for i := range s.pending {
		o := &s.pending[i]
		if o.attempts > 0 && !now.Before(o.sentAt.Add(redeliverAfter(s.env.Settings.RedeliverInterval, o.attempts))) {
			s.deliver(o)
		}
	}
	s.arm(c)
}
