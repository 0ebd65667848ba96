package fsm

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Machine is the deterministic replicated state machine. It is not safe for
// concurrent use, with one exception that matches dragonboat's locking: the
// read-only methods (queries, SaveSnapshot, Hash) may run concurrently with
// each other, never with Apply or RecoverFromSnapshot.
type Machine struct {
	app Application
	obs Observer
	cfg Config
	// ackObs and moveObs are app when it implements AckObserver or
	// MoveObserver, else nil.
	ackObs  AckObserver
	moveObs MoveObserver
	// noteObs is obs when it implements NoteObserver, else nil; notes are
	// the current command's Context.Notify calls (not replicated state).
	noteObs NoteObserver
	notes   []Note

	clock   ClusterTime
	applied uint64
	// notices is flushEvents' scratch list for a BatchObserver.
	notices []Notice
	// lastEmit is the copy of the last emitted payload, which the next
	// emit of equal bytes shares (see share).
	lastEmit []byte

	sessions map[SessionID]*session
	// byOpenKey finds a live session by (secret hash, nonce) so that an
	// OpenSession retry returns it instead of creating a second one.
	byOpenKey map[openKey]SessionID
	// capable indexes live sessions by each capability they declared (see
	// capHeap).
	capable    map[Capability]*capHeap
	unassigned []queued

	// tombstones remembers recently removed sessions, oldest first, so that
	// late requests learn why their session is gone.
	tombstones []tombstone
	tombHead   int
	tombIndex  map[SessionID]RemoveReason

	cachedTotal  int
	pendingTotal int

	// members is the member directory (members.go), by id.
	members []MemberRecord

	ctx    Context
	events []event
}

type openKey struct {
	hash  SecretHash
	nonce uint64
}

type session struct {
	id         SessionID
	secretHash SecretHash
	nonce      uint64
	caps       []Capability
	timeout    time.Duration
	openedAt   ClusterTime
	liveness   ClusterTime
	watermark  uint64
	nextID     uint64
	// heapIdx[i] is the session's position in the heap of caps[i].
	heapIdx []int
	// room is how many pending requests the session may hold before
	// selector work skips it: the capability CapMaxInFlight if declared,
	// else Config.MaxPendingServerRequests. Derived from caps, so not in
	// the snapshot.
	room int
	// responses is sorted by request id, so eviction below the watermark
	// drops a prefix.
	responses []cached
	// pending is sorted by id (ids are assigned in increasing order), so a
	// cumulative ack drops a prefix.
	pending []queued
}

type cached struct {
	id  uint64
	res Result
}

// queued is one server request. For unassigned work req.ID is 0.
type queued struct {
	req        ServerRequest
	selector   Capability
	bySelector bool
}

type tombstone struct {
	id     SessionID
	reason RemoveReason
}

type event struct {
	session SessionID
	req     ServerRequest
	removed RemoveReason // 0 for ServerRequestAdded
}

// New returns an empty machine running app with the limits in cfg. obs may be
// nil. Every replica must be built with the same cfg.
func New(app Application, cfg Config, obs Observer) (*Machine, error) {
	if app == nil {
		return nil, errors.New("fsm: nil Application")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Machine{app: app, obs: obs, cfg: cfg}
	m.ackObs, _ = app.(AckObserver)
	m.moveObs, _ = app.(MoveObserver)
	m.noteObs, _ = obs.(NoteObserver)
	m.reset()
	m.ctx.m = m
	return m, nil
}

func (m *Machine) reset() {
	m.clock = 0
	m.lastEmit = nil
	m.applied = 0
	m.sessions = make(map[SessionID]*session)
	m.byOpenKey = make(map[openKey]SessionID)
	m.capable = make(map[Capability]*capHeap)
	m.unassigned = nil
	m.tombstones = nil
	m.tombHead = 0
	m.tombIndex = make(map[SessionID]RemoveReason)
	m.cachedTotal = 0
	m.pendingTotal = 0
	m.members = nil
}

// Config returns the machine's limits.
func (m *Machine) Config() Config { return m.cfg }

// Apply decodes and applies one log entry and returns its result. The only
// error is one that must stop the node: ErrUnknownVersion (the entry was
// written by a newer binary). A malformed entry of a known version is a
// deterministic StatusInvalid result and changes nothing but the applied
// count. Apply does not keep cmd after it returns.
func (m *Machine) Apply(cmd []byte) (Result, error) {
	c, err := DecodeCommand(cmd)
	if err != nil {
		if errors.Is(err, ErrUnknownVersion) {
			return Result{}, err
		}
		m.applied++
		return m.invalid(err.Error()), nil
	}
	m.applied++
	if t := c.Timestamp(); t > m.clock {
		m.clock = t
	}
	var r Result
	switch c := c.(type) {
	case OpenSession:
		r = m.openSession(c)
	case ClientRequest:
		r = m.clientRequest(c)
	case CloseSession:
		r = m.closeSession(c)
	case RecordLiveness:
		r = m.recordLiveness(c)
	case ExpireSession:
		r = m.expireSession(c)
	case AckServerRequests:
		r = m.ackServerRequests(c)
	case AppCommand:
		r = m.appCommand(c)
	case Batch:
		r = m.batch(c)
	case ExpireSessions:
		r = m.expireSessions(c)
	case SetMembers:
		r = m.setMembers(c)
	default:
		panic(fmt.Sprintf("fsm: decoded command of unhandled type %T", c))
	}
	m.flushEvents()
	m.flushNotes()
	return r, nil
}

// batch applies each request as its own ClientRequest would be applied and
// returns their results in order.
func (m *Machine) batch(c Batch) Result {
	if len(c.Requests) == 0 || len(c.Requests) > m.cfg.MaxBatch {
		return m.invalid(fmt.Sprintf("fsm: batch of %d requests (1 to %d allowed)", len(c.Requests), m.cfg.MaxBatch))
	}
	return batchResult(len(c.Requests), func(i int) Result {
		q := c.Requests[i]
		q.Time = c.Time
		return m.clientRequest(q)
	})
}

// batchResult applies n items in order and lays out their results as a
// StatusBatch result (see DecodeBatchResult).
func batchResult(n int, apply func(i int) Result) Result {
	// Most results are a status and a short payload: one allocation for
	// the usual batch instead of a growing slice's several.
	data := make([]byte, 0, n*16)
	for i := 0; i < n; i++ {
		r := apply(i)
		data = appendUvarint(data, r.Value)
		data = appendBytes(data, r.Data)
	}
	return Result{Value: uint64(StatusBatch), Data: data}
}

func (m *Machine) invalid(msg string) Result {
	if len(msg) > m.cfg.MaxResultBytes {
		msg = msg[:m.cfg.MaxResultBytes]
	}
	return messageResult(StatusInvalid, msg)
}

// goneStatus tells a request for a missing session why it is missing.
func (m *Machine) goneStatus(id SessionID) Result {
	switch m.tombIndex[id] {
	case RemovedExpired:
		return statusResult(StatusSessionExpired)
	case RemovedClosed:
		return statusResult(StatusSessionClosed)
	default:
		return statusResult(StatusSessionNotFound)
	}
}

func (m *Machine) validateOpen(c OpenSession) string {
	if c.ID.IsZero() {
		return "fsm: zero session id"
	}
	if len(c.Capabilities) > m.cfg.MaxCapabilities {
		return fmt.Sprintf("fsm: %d capabilities exceed the limit of %d", len(c.Capabilities), m.cfg.MaxCapabilities)
	}
	for i, cp := range c.Capabilities {
		if cp.Name == "" {
			return "fsm: empty capability name"
		}
		if len(cp.Name) > m.cfg.MaxCapabilityBytes || len(cp.Value) > m.cfg.MaxCapabilityBytes {
			return fmt.Sprintf("fsm: capability %q longer than %d bytes", cp.Name, m.cfg.MaxCapabilityBytes)
		}
		if i > 0 && c.Capabilities[i-1].Name >= cp.Name {
			return "fsm: capabilities not sorted by name or duplicated"
		}
	}
	if msg := m.validateInFlight(c.Capabilities); msg != "" {
		return msg
	}
	if c.Timeout < m.cfg.MinSessionTimeout || c.Timeout > m.cfg.MaxSessionTimeout {
		return fmt.Sprintf("fsm: session timeout %v outside [%v, %v]", c.Timeout, m.cfg.MinSessionTimeout, m.cfg.MaxSessionTimeout)
	}
	return ""
}

func (m *Machine) openSession(c OpenSession) Result {
	if msg := m.validateOpen(c); msg != "" {
		return m.invalid(msg)
	}
	key := openKey{hash: c.SecretHash, nonce: c.Nonce}
	if id, ok := m.byOpenKey[key]; ok {
		s := m.sessions[id]
		s.liveness = max(s.liveness, m.clock)
		return sessionResult(StatusSessionExisting, id)
	}
	if _, ok := m.sessions[c.ID]; ok {
		return statusResult(StatusSessionExists)
	}
	if _, ok := m.tombIndex[c.ID]; ok {
		// Reusing a remembered id would make late requests of the old
		// session look like requests of the new one.
		return statusResult(StatusSessionExists)
	}
	if len(m.sessions) >= m.cfg.MaxSessions {
		return statusResult(StatusTooManySessions)
	}
	s := &session{
		id:         c.ID,
		secretHash: c.SecretHash,
		nonce:      c.Nonce,
		caps:       c.Capabilities,
		timeout:    c.Timeout,
		openedAt:   m.clock,
		liveness:   m.clock,
		nextID:     1,
	}
	m.ctx.session = c.ID
	if err := m.app.SessionOpened(&m.ctx, s.info()); err != nil {
		msg := err.Error()
		if len(msg) > m.cfg.MaxResultBytes {
			msg = msg[:m.cfg.MaxResultBytes]
		}
		return messageResult(StatusSessionRejected, msg)
	}
	m.insertSession(s)
	m.drainUnassigned()
	return sessionResult(StatusSessionOpened, c.ID)
}

func (m *Machine) insertSession(s *session) {
	s.room = m.sessionRoom(s.caps)
	m.sessions[s.id] = s
	m.byOpenKey[openKey{hash: s.secretHash, nonce: s.nonce}] = s.id
	m.indexSession(s)
	m.cachedTotal += len(s.responses)
	m.pendingTotal += len(s.pending)
}

func (m *Machine) clientRequest(c ClientRequest) Result {
	s := m.sessions[c.Session]
	if s == nil {
		return m.goneStatus(c.Session)
	}
	if c.RequestID == 0 {
		return m.invalid("fsm: request id 0")
	}
	if len(c.Payload) > m.cfg.MaxPayloadBytes {
		return m.invalid(fmt.Sprintf("fsm: payload of %d bytes exceeds %d", len(c.Payload), m.cfg.MaxPayloadBytes))
	}
	s.liveness = max(s.liveness, m.clock)
	// A request is itself pending, so a lowest-pending id above it is a
	// client bug; clamping keeps the request's own response.
	m.raiseWatermark(s, min(c.LowestPending, c.RequestID))
	i, found := slices.BinarySearchFunc(s.responses, c.RequestID, func(e cached, id uint64) int {
		switch {
		case e.id < id:
			return -1
		case e.id > id:
			return 1
		}
		return 0
	})
	if found {
		return s.responses[i].res
	}
	next := s.next()
	switch {
	case c.RequestID < next:
		// Below next and not cached: answered and evicted, or skipped by
		// the client (below its lowest pending id). Never run again.
		return statusResult(StatusResponseEvicted)
	case c.RequestID > next:
		// An earlier id has not run yet: running this one first would
		// reorder the session's commands.
		return statusResult(StatusOutOfOrder)
	}
	// c.RequestID == next. Every cached id is below next, so once the
	// client's lowest pending id reaches next (it is the session's lowest
	// unanswered id) the cache is empty and this bound cannot starve it.
	if len(s.responses) >= m.cfg.MaxCachedResponses {
		return statusResult(StatusTooManyInFlight)
	}
	r := m.runApp(c.Session, c.Payload)
	s.responses = slices.Insert(s.responses, i, cached{id: c.RequestID, res: r})
	m.cachedTotal++
	return r
}

// next is the only request id the session may run now: the watermark (every
// id below it was answered or skipped by the client) or the id after the
// highest cached response, whichever is higher. Requests run in id order, so
// the cached ids are exactly the answered ids at or above the watermark and
// next never decreases; it needs no state of its own (and no snapshot field).
func (s *session) next() uint64 {
	n := max(s.watermark, 1)
	if k := len(s.responses); k > 0 {
		n = max(n, s.responses[k-1].id+1)
	}
	return n
}

func (m *Machine) raiseWatermark(s *session, lowest uint64) {
	if lowest <= s.watermark {
		return
	}
	s.watermark = lowest
	n := 0
	for n < len(s.responses) && s.responses[n].id < lowest {
		n++
	}
	if n > 0 {
		// Clear the evicted entries so their results can be collected.
		clear(s.responses[:n])
		s.responses = s.responses[n:]
		m.cachedTotal -= n
	}
}

// runApp runs one command through the Application and turns its outcome into
// a Result.
func (m *Machine) runApp(id SessionID, payload []byte) Result {
	m.ctx.session = id
	out, err := m.app.Apply(&m.ctx, payload)
	if err != nil && errors.Is(err, ErrQuotaExceeded) {
		msg := err.Error()
		if len(msg) > m.cfg.MaxResultBytes {
			msg = msg[:m.cfg.MaxResultBytes]
		}
		return messageResult(StatusQuotaExceeded, msg)
	}
	if err != nil {
		code, msg := appErrorOf(err)
		if 4+len(msg) > m.cfg.MaxResultBytes {
			return statusResult(StatusResultTooLarge)
		}
		return appErrorResult(code, msg)
	}
	if len(out) > m.cfg.MaxResultBytes {
		return statusResult(StatusResultTooLarge)
	}
	return Result{Value: uint64(StatusOK), Data: out}
}

func (m *Machine) appCommand(c AppCommand) Result {
	if len(c.Payload) > m.cfg.MaxPayloadBytes {
		return m.invalid(fmt.Sprintf("fsm: payload of %d bytes exceeds %d", len(c.Payload), m.cfg.MaxPayloadBytes))
	}
	return m.runApp(SessionID{}, c.Payload)
}

func (m *Machine) closeSession(c CloseSession) Result {
	s := m.sessions[c.Session]
	if s == nil {
		return m.goneStatus(c.Session)
	}
	m.removeSession(s, RemovedClosed)
	return statusResult(StatusOK)
}

func (m *Machine) recordLiveness(c RecordLiveness) Result {
	if len(c.Sessions) > m.cfg.MaxBatch {
		return m.invalid(fmt.Sprintf("fsm: liveness batch of %d exceeds %d", len(c.Sessions), m.cfg.MaxBatch))
	}
	for _, id := range c.Sessions {
		// Sessions removed since the leader built the batch are skipped.
		if s := m.sessions[id]; s != nil {
			s.liveness = max(s.liveness, m.clock)
		}
	}
	return statusResult(StatusOK)
}

func (m *Machine) expireSession(c ExpireSession) Result {
	s := m.sessions[c.Session]
	if s == nil {
		return m.goneStatus(c.Session)
	}
	// The leader decided on its own local clock that the session is due
	// (docs/fsm.md, "Expiry"); cluster time cannot second-guess it, since
	// its pace is whichever leader stamped last. The machine only checks
	// that no liveness was recorded after the record the decision saw.
	if s.liveness.After(c.LivenessStamp) {
		return statusResult(StatusStale)
	}
	m.removeSession(s, RemovedExpired)
	return statusResult(StatusOK)
}

// expireSessions applies each expiry as its own ExpireSession would be and
// returns their results in order.
func (m *Machine) expireSessions(c ExpireSessions) Result {
	if len(c.Expiries) == 0 || len(c.Expiries) > m.cfg.MaxBatch {
		return m.invalid(fmt.Sprintf("fsm: expiry batch of %d (1 to %d allowed)", len(c.Expiries), m.cfg.MaxBatch))
	}
	return batchResult(len(c.Expiries), func(i int) Result {
		e := c.Expiries[i]
		return m.expireSession(ExpireSession{Time: c.Time, Session: e.Session, LivenessStamp: e.LivenessStamp})
	})
}

func (m *Machine) ackServerRequests(c AckServerRequests) Result {
	if len(c.Acks) > m.cfg.MaxBatch {
		return m.invalid(fmt.Sprintf("fsm: ack batch of %d exceeds %d", len(c.Acks), m.cfg.MaxBatch))
	}
	freed := false
	for _, a := range c.Acks {
		s := m.sessions[a.Session]
		if s == nil {
			continue
		}
		s.liveness = max(s.liveness, m.clock)
		n := 0
		for n < len(s.pending) && s.pending[n].req.ID <= a.UpTo {
			n++
		}
		if n > 0 {
			var acked []ServerRequest
			if m.ackObs != nil {
				acked = make([]ServerRequest, n)
				for i := range acked {
					acked[i] = s.pending[i].req
				}
			}
			clear(s.pending[:n])
			switch {
			case n == len(s.pending) && cap(s.pending) <= keptQueue:
				// Keep a small array: a watcher acknowledging each
				// notification would otherwise make every next one
				// allocate its queue afresh.
				s.pending = s.pending[:0]
			case n == len(s.pending):
				s.pending = nil // a large emptied queue is given back
			default:
				s.pending = s.pending[n:]
			}
			m.pendingTotal -= n
			m.pendingChanged(s)
			freed = true
			if acked != nil {
				m.ctx.session = s.id
				m.ackObs.ServerRequestsAcked(&m.ctx, s.id, acked)
			}
		}
	}
	if freed {
		m.drainUnassigned()
	}
	return statusResult(StatusOK)
}

// removeSession drops a session and all its state, moves its
// selector-addressed work elsewhere and tells the Application.
func (m *Machine) removeSession(s *session, reason RemoveReason) {
	delete(m.sessions, s.id)
	delete(m.byOpenKey, openKey{hash: s.secretHash, nonce: s.nonce})
	m.unindexSession(s)
	m.cachedTotal -= len(s.responses)
	m.pendingTotal -= len(s.pending)
	m.addTombstone(s.id, reason)
	m.events = append(m.events, event{session: s.id, removed: reason})

	var dropped []ServerRequest
	var moved []move
	for _, q := range s.pending {
		if q.bySelector {
			if pl, ok := m.place(q.selector, q.req.CreatedAt, q.req.Payload); ok {
				if m.moveObs != nil {
					moved = append(moved, move{req: q.req, to: pl})
				}
				continue
			}
		}
		dropped = append(dropped, q.req)
	}
	m.ctx.session = s.id
	m.reportMoves(s.id, moved)
	m.app.SessionClosed(&m.ctx, s.id, reason, dropped)
}

func (m *Machine) addTombstone(id SessionID, reason RemoveReason) {
	if len(m.tombIndex) >= m.cfg.MaxTombstones {
		old := m.tombstones[m.tombHead]
		delete(m.tombIndex, old.id)
		m.tombstones[m.tombHead] = tombstone{}
		m.tombHead++
		if m.tombHead >= len(m.tombstones)/2 {
			m.tombstones = append([]tombstone(nil), m.tombstones[m.tombHead:]...)
			m.tombHead = 0
		}
	}
	m.tombstones = append(m.tombstones, tombstone{id: id, reason: reason})
	m.tombIndex[id] = reason
}

func (m *Machine) emit(t Target, payload []byte) (Placement, error) {
	if len(payload) > m.cfg.MaxServerRequestBytes {
		return Placement{}, fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(payload), m.cfg.MaxServerRequestBytes)
	}
	p := m.share(payload)
	if !t.bySelector {
		s := m.sessions[t.session]
		if s == nil {
			return Placement{}, fmt.Errorf("%w: %v", ErrSessionNotFound, t.session)
		}
		if len(s.pending) >= m.cfg.MaxPendingServerRequests {
			return Placement{}, fmt.Errorf("%w: session %v has %d pending", ErrQueueFull, t.session, len(s.pending))
		}
		id := m.enqueue(s, queued{req: ServerRequest{CreatedAt: m.clock, Payload: p}})
		return Placement{Session: s.id, ID: id}, nil
	}
	pl, ok := m.place(t.selector, m.clock, p)
	if !ok {
		return Placement{}, fmt.Errorf("%w: no session with %v has room and %d are unassigned", ErrQueueFull, t.selector, len(m.unassigned))
	}
	return pl, nil
}

// place gives selector-addressed work to the best capable session, or parks
// it in the unassigned queue. It reports false only when both are full.
func (m *Machine) place(sel Capability, createdAt ClusterTime, payload []byte) (Placement, bool) {
	q := queued{req: ServerRequest{CreatedAt: createdAt, Payload: payload}, selector: sel, bySelector: true}
	if s := m.pick(sel); s != nil {
		id := m.enqueue(s, q)
		return Placement{Session: s.id, ID: id}, true
	}
	if len(m.unassigned) >= m.cfg.MaxUnassigned {
		return Placement{}, false
	}
	m.unassigned = append(m.unassigned, q)
	return Placement{Queued: true}, true
}

// pick returns the capable session with room that has the fewest pending
// requests, ties broken by the smaller id, or nil. Full sessions sort after
// all others (capHeap), so if the heap's minimum is full, every capable
// session is.
func (m *Machine) pick(sel Capability) *session {
	h := m.capable[sel]
	if h == nil {
		return nil
	}
	if s := (*h)[0].s; !s.full() {
		return s
	}
	return nil
}

func (m *Machine) enqueue(s *session, q queued) uint64 {
	q.req.ID = s.nextID
	s.nextID++
	s.pending = append(s.pending, q)
	m.pendingTotal++
	m.pendingChanged(s)
	m.events = append(m.events, event{session: s.id, req: q.req})
	return q.req.ID
}

// drainUnassigned assigns parked work, oldest first, to capable sessions that
// have room. A selector that found no room is not tried again in the same
// pass, so a pass costs O(unassigned x log capable sessions).
func (m *Machine) drainUnassigned() {
	if len(m.unassigned) == 0 {
		return
	}
	var full map[Capability]bool
	var moved []move
	kept := m.unassigned[:0]
	for _, q := range m.unassigned {
		if !full[q.selector] {
			if s := m.pick(q.selector); s != nil {
				id := m.enqueue(s, q)
				if m.moveObs != nil {
					moved = append(moved, move{req: q.req, to: Placement{Session: s.id, ID: id}})
				}
				continue
			}
			if full == nil {
				full = make(map[Capability]bool)
			}
			full[q.selector] = true
		}
		kept = append(kept, q)
	}
	clear(m.unassigned[len(kept):])
	m.unassigned = kept
	// Reported after the queue is consistent again: the application may
	// Emit from the callback.
	m.reportMoves(SessionID{}, moved)
}

// keptQueue is the largest emptied server-request queue (in entries) a
// session keeps for reuse; larger ones are released, so a session that once
// held many pending requests does not pin that memory.
const keptQueue = 16

func (m *Machine) flushEvents() {
	if len(m.events) == 0 {
		return
	}
	if b, ok := m.obs.(BatchObserver); ok {
		notices := m.notices[:0]
		for _, e := range m.events {
			notices = append(notices, Notice{Session: e.session, Request: e.req, Removed: e.removed})
		}
		b.Notices(notices)
		clear(notices)
		m.notices = notices[:0]
		if cap(m.notices) > 4096 {
			m.notices = nil // an outsized fan-out does not pin its scratch
		}
	} else if m.obs != nil {
		for _, e := range m.events {
			if e.removed != 0 {
				m.obs.SessionRemoved(e.session, e.removed)
			} else {
				m.obs.ServerRequestAdded(e.session, e.req)
			}
		}
	}
	clear(m.events)
	m.events = m.events[:0]
}

func (s *session) info() SessionInfo {
	return SessionInfo{
		ID:                    s.id,
		SecretHash:            s.secretHash,
		Nonce:                 s.nonce,
		Capabilities:          s.caps,
		Timeout:               s.timeout,
		OpenedAt:              s.openedAt,
		Liveness:              s.liveness,
		Watermark:             s.watermark,
		CachedResponses:       len(s.responses),
		PendingServerRequests: len(s.pending),
		NextServerRequestID:   s.nextID,
	}
}
