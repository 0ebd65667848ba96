// session: one actor per live session served by this node (the leader),
// while the session has work (see Retirement below).
//
// Owns: the session's current connection (0 while none), its requests in
// flight (at most MaxInFlight; past that the client gets TooManyInFlight),
// and delivery of its server-initiated requests: each is sent on arrival,
// sent again at once when the session is bound to a new connection, and
// retried RedeliverInterval after its latest send, then after doubling
// intervals up to 16 times RedeliverInterval, until the client acknowledges
// it. It reports liveness to the keepalive actor on
// every keep-alive and, at most once per keep-alive interval, on any other
// valid message. With the keep-alive fast path it also owns an idle timer
// (retireIntervals keep-alive intervals after its latest message).
//
// Spawned by the sessions directory when a session is created or continued
// here, and again whenever the directory has a message for a session whose
// actor retired; supervised by the directory, stopped when the session is
// removed, leadership is lost, the node shuts down, or it retires. On restart
// it asks the directory for its connection and reads its pending server
// requests back from the replicated state; requests that were in flight
// complete on the bridge's goroutines and their replies reach the restarted
// actor, which forwards them; any reply lost in between is covered by the
// client resending the same request id, which the state machine answers from
// its cache.
//
// Retirement: with the keep-alive fast path on, an idle session's keep-alives
// never reach its actor, which would sit doing nothing. When the actor has
// had no message for retireIntervals keep-alive intervals and holds no work
// (nothing in flight, no pending server request, no redelivery timer, no read
// of its pending requests or close proposal outstanding), it asks the
// directory to retire it, saying how many forwarded messages it has handled.
// The directory retires it only if it forwarded no message since, and keeps
// the session's entry; its next message spawns a new actor (see sessions.go),
// which skips the Raft read of pending requests unless something may have
// queued them while it was retired. With the fast path off every keep-alive
// reaches the actor, so the idle timer is not armed and it never retires.
package actors

import (
	"cmp"
	"errors"
	"fmt"
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

// queryTag names a query in flight: the client's correlation id and the
// key of its entry in the session's reads.
type queryTag struct{ id, key uint64 }

// flight is a command or query admitted and not yet answered: when, and
// the payload bytes it holds of the session's and the node's budgets.
type flight struct {
	at   time.Time
	size int64
}

// defaultWindow is the server requests a session has unacknowledged on the
// wire when Settings.ServerRequestWindow is 0: the client library's
// default buffer (client.WithServerRequestBuffer).
const defaultWindow = 64

type pendingTag struct{}

// retireIntervals is how many keep-alive intervals without any message an
// idle session actor waits before it asks the directory to retire it.
const retireIntervals = 3

// idleTick fires the idle timer of a session actor.
type idleTick struct{}

// retire asks the directory to stop an idle session actor. handled is the
// number of forwarded messages (SessionMsg, Deliver, bind, Resync) the actor
// handled since it was spawned; the directory retires it only if it has
// forwarded exactly as many, so none is waiting in its mailbox. acked is
// its acknowledged server request, which its next actor starts from.
type retire struct {
	id      fsm.SessionID
	handled uint64
	acked   uint64
}

// sessionBoot is what the directory tells a session actor it spawns: its
// connection (0: none), the acknowledged server request its retired
// predecessor had seen, and whether it must read its pending server
// requests from the replicated state (a first spawn, or something may have
// queued requests while the session had no actor). It is used by the first
// Started only: a restart after a panic asks the directory and reads.
type sessionBoot struct {
	conn  ConnID
	acked uint64
	read  bool
	// self is the directory's copy of the actor's PID, shared so that a
	// live actor costs one copy, not two (see Started).
	self *actor.PID
}

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
	// they were proposed and their size. An entry whose reply was lost (a
	// bridge restart drops the message it was handling) is forgotten after
	// twice the proposal timeout, so lost replies cannot use up the bound.
	inFlight map[uint64]flight
	// reads are the queries in flight, by a key of the session's own
	// (correlation ids are the client's and may repeat); forgotten like
	// inFlight.
	reads    map[uint64]flight
	nextRead uint64
	// bytes is the payload bytes of inFlight and reads, at most
	// Settings.MaxSessionBytes; the same bytes are held of Env.Bytes.
	bytes    int64
	pending  []outgoing // ordered by id, ids strictly increasing
	acked    uint64
	reported time.Time
	timer    *time.Timer
	timerDue time.Time // when timer fires
	timerGen uint64    // generation of timer, carried by its tick
	backlog  *backlog
	// boot is set for the first Started of a spawn by the directory.
	boot *sessionBoot
	// self is a copy of the actor's PID (see Started).
	self *actor.PID
	// handled counts the forwarded messages handled since the spawn (a
	// bind carries the directory's count and resets it, so a message
	// lost to a panic is accounted for); synced is false from a restart
	// until that bind.
	handled uint64
	synced  bool
	// last is when the actor last got a message (other than its idle
	// tick); idle fires retireIntervals keep-alive intervals after it.
	last time.Time
	idle *time.Timer
	// reading counts the reads of pending requests in flight, readAt is
	// when the latest was sent; closeAt is when the close proposal in
	// flight was sent (zero: none).
	reading int
	readAt  time.Time
	closeAt time.Time
}

// NewSession returns the producer of a session actor. backlog is shared
// with the directory, which counts the messages it forwards.
// Started as such, the actor asks its parent for its connection and reads
// its pending server requests.
func NewSession(env *Env, info fsm.SessionInfo, backlog *backlog) actor.Producer {
	return newSession(env, info, backlog, nil)
}

// newSession is NewSession for an actor the directory spawns: boot is used
// by the first actor the producer makes; the actors it makes on restarts
// ask the directory and read, as NewSession's do.
func newSession(env *Env, info fsm.SessionInfo, backlog *backlog, boot *sessionBoot) actor.Producer {
	var first atomic.Pointer[sessionBoot]
	first.Store(boot)
	return func() actor.Actor {
		return &session{env: env, id: info.ID, timeout: info.Timeout, inFlight: make(map[uint64]flight),
			reads: make(map[uint64]flight), backlog: backlog, boot: first.Swap(nil)}
	}
}

func (s *session) Receive(c actor.Context) {
	msg := c.Message()
	switch msg.(type) {
	case *idleTick, actor.SystemMessage, actor.AutoReceiveMessage:
	case *SessionMsg, *Deliver, *Resync, *bind:
		s.handled++
		s.touch()
	default:
		s.touch()
	}
	switch m := msg.(type) {
	case *actor.Started:
		// Replies and timer ticks are addressed to a copy of the actor's
		// PID (the directory's, when it spawned this actor): a PID caches
		// its process once a message is sent through it, and protoactor's
		// set of the directory's children keeps the PIDs of stopped
		// children in its spare capacity, which would pin every retired
		// actor's memory until its slot is reused.
		s.last = s.env.Now()
		if b := s.boot; b != nil && b.self != nil && b.self.Equal(c.Self()) {
			s.self = b.self
		} else {
			s.self = actor.NewPID(c.Self().Address, c.Self().Id)
		}
		if b := s.boot; b != nil {
			s.boot = nil
			s.conn, s.acked, s.synced = b.conn, b.acked, true
			if b.read {
				s.readPending(c)
			}
		} else {
			c.Request(c.Parent(), &sessionStarted{id: s.id})
			s.readPending(c)
		}
		s.armIdle(c)
	case *idleTick:
		s.idleTick(c)
	case *actor.Stopping, *actor.Restarting:
		if s.timer != nil {
			s.timer.Stop()
		}
		if s.idle != nil {
			s.idle.Stop()
		}
		// The node's byte budget is given back now: the replies of what
		// is in flight reach a stopped actor or a fresh one, which holds
		// none of it.
		s.env.Bytes.Release(s.bytes)
		s.bytes = 0
		clear(s.inFlight)
		clear(s.reads)
	case *bind:
		if m.seq != 0 {
			// The directory's count of what it forwarded, this bind
			// included: every earlier message was handled or lost.
			s.handled, s.synced = m.seq, true
		}
		s.conn = m.conn
		if s.conn != 0 {
			// A continuation is a sign of life at most once per
			// keep-alive interval, like any message but a keep-alive, so
			// that cycling ContinueSession cannot stand in for them.
			s.seen(c, false)
			// Only the window is sent; the rest follows as the client
			// acknowledges.
			for i := range min(len(s.pending), s.window()) {
				s.deliver(&s.pending[i])
			}
			s.arm(c)
		}
	case *SessionMsg:
		s.backlog.done(int64(m.size))
		s.message(c, m)
	case *Proposed:
		s.proposed(m)
	case *ReadDone:
		s.readDone(c, m)
	case *Deliver:
		s.add(c, m.Reqs)
	case *Resync:
		s.readPending(c)
	case *redeliverTick:
		if m.gen != s.timerGen {
			return
		}
		s.timer = nil
		s.redeliver(c)
	}
}

// touch notes a message for the idle timer (armed with the fast path only).
func (s *session) touch() {
	if s.idle != nil {
		s.last = s.env.Now()
	}
}

// readPending reads the session's pending server requests back from the
// replicated state.
func (s *session) readPending(c actor.Context) {
	s.reading++
	s.readAt = s.env.Now()
	c.Send(s.env.Refs.Raft, &Read{Query: fsm.PendingQuery{Session: s.id}, ReplyTo: s.self, Tag: pendingTag{}})
}

// armIdle starts the idle timer (only with the keep-alive fast path: without
// it every keep-alive reaches the actor, which is then never idle for long).
func (s *session) armIdle(c actor.Context) {
	if !s.env.Settings.KeepAliveFastPath || s.env.Settings.KeepAliveInterval <= 0 {
		return
	}
	system, self := c.ActorSystem(), s.self
	s.idle = time.AfterFunc(retireIntervals*s.env.Settings.KeepAliveInterval, func() { system.Root.Send(self, &idleTick{}) })
}

// idleTick asks the directory to retire this actor when it has had no
// message for retireIntervals keep-alive intervals and holds no work;
// otherwise it waits again. A retirement the directory declines (it has
// forwarded messages since) is asked again after the next idle stretch.
func (s *session) idleTick(c actor.Context) {
	if s.idle == nil {
		return // a tick of a previous incarnation's timer
	}
	after := retireIntervals * s.env.Settings.KeepAliveInterval
	now := s.env.Now()
	if quiet := now.Sub(s.last); quiet < after {
		s.idle.Reset(after - quiet)
		return
	}
	if s.busy(now) {
		s.idle.Reset(after)
		return
	}
	c.Request(c.Parent(), &retire{id: s.id, handled: s.handled, acked: s.acked})
	s.idle.Reset(after)
}

// busy reports whether the actor holds work that a retirement would drop:
// commands or queries in flight (after forgetting those whose replies were
// lost), pending server requests or their redelivery timer, a read of
// pending requests or a close proposal in flight, or a restart not yet
// told the directory's count of forwarded messages.
func (s *session) busy(now time.Time) bool {
	s.forgetLost(now)
	lost := 2 * s.env.Settings.ProposalTimeout
	return len(s.inFlight) > 0 || len(s.reads) > 0 || len(s.pending) > 0 || s.timer != nil || !s.synced ||
		(s.reading > 0 && now.Sub(s.readAt) < lost) || (!s.closeAt.IsZero() && now.Sub(s.closeAt) < lost)
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
		// Usually to an idle connection: written here with one
		// non-blocking write rather than by a writer started for it.
		s.env.sendNow(in.Conn, &codec.KeepAliveResponse{Timestamp: m.Timestamp})
		s.seen(c, true)
		s.ack(c, m.AckedUpTo)
	case *codec.ClientRequest:
		s.seen(c, false)
		if max := s.env.Settings.MaxCommandBytes; max > 0 && len(m.Payload) > max {
			s.refused("command_size")
			s.env.send(in.Conn, &codec.RequestError{RequestID: m.RequestID, Reason: codec.CodeTooLarge,
				Message: fmt.Sprintf("command of %d bytes; the application accepts at most %d", len(m.Payload), max)})
			return
		}
		if code, reason := s.admit(m.RequestID, m.LowestPending, int64(len(m.Payload))); code != 0 {
			s.refused(reason)
			s.env.send(in.Conn, &codec.RequestError{RequestID: m.RequestID, Reason: code, Message: refusalText[reason]})
			return
		}
		s.env.Work.ProposeRequest(c.ActorSystem(), fsm.ClientRequest{
			Session: s.id, RequestID: m.RequestID, LowestPending: m.LowestPending, Payload: m.Payload,
		}, s.self, requestTag{id: m.RequestID})
	case *codec.Query:
		s.seen(c, false)
		if !m.Consistency.Known() {
			// §7: consistency levels may be added within version 1; a
			// level this node does not serve is refused, never guessed.
			s.env.send(in.Conn, &codec.QueryError{CorrelationID: m.CorrelationID, Reason: codec.CodeUnsupported,
				Message: "consistency " + m.Consistency.String() + " is not supported"})
			return
		}
		key, reason := s.admitRead(int64(len(m.Payload)))
		if reason != "" {
			s.refused(reason)
			s.env.send(in.Conn, &codec.QueryError{CorrelationID: m.CorrelationID, Reason: codec.CodeOverloaded,
				Message: refusalText[reason]})
			return
		}
		s.env.Work.Read(c.ActorSystem(), m.Payload, m.Consistency == codec.Stale, s.self, queryTag{id: m.CorrelationID, key: key})
	case *codec.ServerRequestAck:
		s.seen(c, false)
		s.ack(c, m.RequestID)
	case *codec.CloseSession:
		s.closeAt = s.env.Now()
		cmd := fsm.EncodeCommand(nil, fsm.CloseSession{Time: fsm.Stamp(s.env.Now()), Session: s.id})
		c.Send(s.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: s.self, Tag: closeTag{}})
	}
}

func (s *session) proposed(p *Proposed) {
	switch t := p.Tag.(type) {
	case requestTag:
		if f, ok := s.inFlight[t.id]; ok {
			s.release(f.size)
			delete(s.inFlight, t.id)
		}
		if s.conn == 0 {
			// The client resends on reconnect and the cache answers.
			return
		}
		s.env.send(s.conn, requestReply(t.id, p))
	case closeTag:
		s.closeAt = time.Time{}
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
//
// It also holds the request's payload bytes of the session's budget
// (MaxSessionBytes) and the node's (Env.Bytes), answered before anything is
// proposed: past either the code is Overloaded (a single command never
// exceeds the session's budget: the node's config keeps it at least
// max_payload). It returns 0 when the request is admitted, else the code
// and the refusal's reason (a metric label, see refusalText).
func (s *session) admit(id, lowest uint64, size int64) (codec.Code, string) {
	now := s.env.Now()
	limit := s.env.Settings.MaxInFlight
	if id == lowest {
		limit++
	}
	f, again := s.inFlight[id]
	if !again && len(s.inFlight) >= limit {
		s.forgetLost(now)
		if len(s.inFlight) >= limit {
			return codec.CodeTooManyInFlight, "in_flight"
		}
	}
	if reason := s.take(now, size); reason != "" {
		return codec.CodeOverloaded, reason
	}
	// A resend of a request still in flight is proposed again and holds
	// its bytes again, until the first answer releases both.
	s.inFlight[id] = flight{at: now, size: f.size + size}
	return 0, ""
}

// admitRead holds a query's payload bytes and returns the key of its entry
// in reads, or the reason it is refused: "queries" (MaxInFlight queries in
// flight already), "session_bytes" or "node_bytes" (a budget is spent).
func (s *session) admitRead(size int64) (uint64, string) {
	now := s.env.Now()
	if len(s.reads) >= s.env.Settings.MaxInFlight {
		s.forgetLost(now)
		if len(s.reads) >= s.env.Settings.MaxInFlight {
			return 0, "queries"
		}
	}
	if reason := s.take(now, size); reason != "" {
		return 0, reason
	}
	s.nextRead++
	s.reads[s.nextRead] = flight{at: now, size: size}
	return s.nextRead, ""
}

// take holds size bytes of the session's and the node's budgets, or says
// which is spent ("session_bytes", "node_bytes").
func (s *session) take(now time.Time, size int64) string {
	max := int64(s.env.Settings.MaxSessionBytes)
	if max > 0 && s.bytes+size > max {
		s.forgetLost(now)
		if s.bytes+size > max {
			return "session_bytes"
		}
	}
	if !s.env.Bytes.Take(size) {
		return "node_bytes"
	}
	s.bytes += size
	return ""
}

// release gives back bytes held by take.
func (s *session) release(size int64) {
	s.bytes -= size
	s.env.Bytes.Release(size)
}

// forgetLost forgets commands and queries in flight for more than twice
// the proposal timeout: their replies were lost (a bridge restart drops the
// message it was handling), and they must not hold the bounds for ever.
func (s *session) forgetLost(now time.Time) {
	for id, f := range s.inFlight {
		if now.Sub(f.at) > 2*s.env.Settings.ProposalTimeout {
			s.release(f.size)
			delete(s.inFlight, id)
		}
	}
	for key, f := range s.reads {
		if now.Sub(f.at) > 2*s.env.Settings.ProposalTimeout {
			s.release(f.size)
			delete(s.reads, key)
		}
	}
}

// refusalText is the message a client gets with each refusal reason.
var refusalText = map[string]string{
	"in_flight":     "too many requests in flight for this session",
	"queries":       "max_in_flight queries in flight for this session",
	"session_bytes": "the session's bytes in flight are at max_session_bytes",
	"node_bytes":    "the node's command and query bytes in flight are at max_proposal_bytes",
}

// refused counts a request refused before it was proposed.
func (s *session) refused(reason string) {
	s.env.Metrics.Refused.WithLabelValues(reason).Inc()
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
	case fsm.StatusQuotaExceeded:
		return &codec.RequestError{RequestID: id, Reason: codec.CodeQuotaExceeded, Message: out.Message}
	}
	return &codec.RequestError{RequestID: id, Reason: code, Message: out.Status.String() + " " + out.Message}
}

func (s *session) readDone(c actor.Context, r *ReadDone) {
	switch t := r.Tag.(type) {
	case queryTag:
		if f, ok := s.reads[t.key]; ok {
			s.release(f.size)
			delete(s.reads, t.key)
		}
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
		s.reading = max(s.reading-1, 0)
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
		if i < s.window() {
			s.deliver(&s.pending[i])
		}
	}
	s.arm(c)
}

// window is how many of the lowest pending server requests are on the
// wire at a time: the client holds at most its buffer of requests above
// the last one it took (client.WithServerRequestBuffer, default 64) and
// drops the rest unacknowledged, so sending more only fills the
// connection's queue with copies sent again later. The others stay queued
// in the replicated state (and in pending) and are sent as acknowledgements
// open the window.
func (s *session) window() int {
	if w := s.env.Settings.ServerRequestWindow; w > 0 {
		return w
	}
	return defaultWindow
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
	if len(s.pending) == 0 && s.timer != nil {
		// Nothing left to redeliver: the timer goes now rather than
		// firing for nothing (and holding off the actor's retirement);
		// a tick already posted is ignored by its generation.
		s.timer.Stop()
		s.timer = nil
		s.timerGen++
	}
	c.Send(s.env.Refs.Dispatcher, &Acked{Session: s.id, UpTo: upTo})
	// The window moved: send what entered it and was never sent.
	if s.conn != 0 {
		for i := range min(len(s.pending), s.window()) {
			if s.pending[i].attempts == 0 {
				s.deliver(&s.pending[i])
			}
		}
		s.arm(c)
	}
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
	system, self := c.ActorSystem(), s.self
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
	for i := range min(len(s.pending), s.window()) {
		o := &s.pending[i]
		if o.attempts > 0 && !now.Before(o.sentAt.Add(redeliverAfter(s.env.Settings.RedeliverInterval, o.attempts))) {
			s.deliver(o)
		}
	}
	s.arm(c)
}
