package fsm

import (
	"io"
)

// Application is the replicated application users implement. The machine
// owns sessions, deduplication, watermarks and server-request queues; the
// application sees each command exactly once, in log order, and never a
// duplicate or a command for a dead session.
//
// Goroutines. Apply, SessionOpened, SessionClosed and RecoverFromSnapshot are
// called by the one goroutine that applies the log (dragonboat's apply
// worker), never concurrently with each other or with Query/SaveSnapshot.
// Query and SaveSnapshot are read-only and may run concurrently with each
// other (dragonboat holds a shared read lock for them), so they must not
// write shared state, not even caches.
//
// Determinism. Apply, SessionOpened and SessionClosed must be deterministic:
// given the same state and the same input they make the same changes, return
// the same values and make the same Emit calls in the same order on every
// replica. They must not read the wall clock (use Context.Now), use
// randomness, iterate maps in an order that affects state or output, or
// depend on anything outside their state and their arguments. Errors they
// return must be deterministic too: they are cached and replayed.
//
// Byte slices. Input slices (commands, queries, payloads of dropped work) are
// owned by the caller and only valid during the call: copy what you keep.
// Returned slices become owned by the machine, which caches and shares them;
// do not modify them after returning.
//
// Errors. An error from Apply is a result, not a failure: it is cached and
// returned to the client, and state changes made before it stand (as do
// Emits). Return an *AppError (or any error with an AppCode() uint32 method)
// so that clients can match the code; other errors get code 0. A broken
// invariant that must stop the replica is a panic. An error from
// SaveSnapshot or RecoverFromSnapshot stops the node.
type Application interface {
	// Apply executes a command. ctx.Session() is the client session that
	// submitted it, or the zero SessionID for an AppCommand proposed by
	// node-local code. The returned result is cached for the session.
	Apply(ctx *Context, cmd []byte) ([]byte, error)
	// Query answers a read-only query. It must not change state.
	Query(query []byte) ([]byte, error)
	// SessionOpened is called before a new session becomes live; returning
	// an error rejects it and err.Error() is the reason the client sees.
	// The session is not yet live, so Emit to it (ToSession(info.ID))
	// fails with ErrSessionNotFound; Emits to others stand even when the
	// session is rejected. Selector-addressed work waiting in the
	// unassigned queue is given to the new session right after this call
	// returns nil; to greet a session, emit to it from its first command.
	SessionOpened(ctx *Context, info SessionInfo) error
	// SessionClosed is called after a session was removed (expired or
	// closed) and its state dropped. dropped lists the work that was
	// addressed to that session alone, plus selector-addressed work that
	// found no other place (see Config.MaxUnassigned), in id order. Emit to
	// other targets is allowed, for example to re-issue dropped work.
	SessionClosed(ctx *Context, id SessionID, reason RemoveReason, dropped []ServerRequest)
	// SaveSnapshot writes the application's whole state to w. The bytes
	// must be deterministic (for example sorted), because replicas compare
	// state hashes computed over snapshots.
	SaveSnapshot(w io.Writer) error
	// RecoverFromSnapshot replaces the application's state with the one
	// SaveSnapshot wrote. r yields exactly those bytes, then io.EOF.
	RecoverFromSnapshot(r io.Reader) error
}

// CommandSizer is implemented by an Application that refuses every command
// longer than MaxCommandSize bytes (for example kv, whose keys and values
// are bounded). A node answers a larger command TooLarge at once, so
// commands the application would refuse never reach the Raft log.
// MaxCommandSize must return the same positive value for the life of the
// node.
type CommandSizer interface {
	MaxCommandSize() int
}

// StateSizer is implemented by an Application that measures its replicated
// state in bytes (the measure it holds against Context.Quota). StateBytes
// may be called from any goroutine, concurrently with Apply; a node exports
// it as a metric.
type StateSizer interface {
	StateBytes() int64
}

// Observer receives node-local notifications of state changes. It is called
// synchronously on every replica, after a command's changes are complete and
// before Apply returns, so it sees the state as it stands after the command.
// The calls are not replicated state: each replica's Observer only sees what
// that replica applies, and nothing is replayed to it from a snapshot (after
// a restore, query Pending and Sessions instead).
//
// An Observer must not block (it stalls the apply goroutine of the whole
// shard; hand work to a bounded channel or actor mailbox and drop or count on
// overflow), must not call back into the Machine, and must not modify the
// payloads it receives (it may keep them: they are never modified).
type Observer interface {
	// ServerRequestAdded reports work queued for a session: emitted, moved
	// from a closing session, or assigned from the unassigned queue.
	ServerRequestAdded(session SessionID, req ServerRequest)
	// SessionRemoved reports that a session expired or was closed.
	SessionRemoved(session SessionID, reason RemoveReason)
}

// Notice is one thing an Observer hears about: work queued for Session
// (Request), or, when Removed is not zero, the session's removal.
type Notice struct {
	Session SessionID
	Request ServerRequest
	Removed RemoveReason
}

// BatchObserver is an Observer that takes every notice of one applied
// command at once, in the order the command produced them, instead of one
// call per notice: one write that notifies a thousand watchers is one call.
// The machine calls Notices instead of ServerRequestAdded and
// SessionRemoved when the Observer implements it. notices and the payloads
// in it belong to the machine: valid during the call, never to be
// modified; copy what you keep (the payloads may be kept as they are, they
// are immutable).
type BatchObserver interface {
	Observer
	Notices(notices []Notice)
}

// Target names who receives server-initiated work: one session, or any
// session that declared a capability (a selector).
type Target struct {
	session    SessionID
	selector   Capability
	bySelector bool
}

// ToSession targets one session. If the session goes away, the work is
// dropped and reported to Application.SessionClosed.
func ToSession(id SessionID) Target { return Target{session: id} }

// ToCapable targets one session that declared capability c. The machine picks
// the capable session with the fewest pending (unacknowledged) server
// requests, ties broken by the smaller session id; with clients that
// acknowledge after processing (client.WithManualAck) that is the session
// with the least unfinished work. If no capable session has room the work waits in
// the unassigned queue; if its session goes away it moves to another capable
// session.
func ToCapable(c Capability) Target { return Target{selector: c, bySelector: true} }

// Context is what the machine hands the Application for one call. It is only
// valid during that call and must not be retained.
type Context struct {
	m       *Machine
	session SessionID
}

// Now returns the cluster time in Unix nanoseconds: the largest leader time
// stamp applied so far, identical on every replica.
func (c *Context) Now() ClusterTime { return c.m.clock }

// Quota returns the byte quota of the application's replicated state
// (Config.QuotaBytes; 0: none). An application that keeps the quota refuses
// a command that would grow its state past it by returning an error
// matching ErrQuotaExceeded, and keeps accepting commands that shrink it.
// The quota is the same on every replica, so the decision is deterministic
// as long as the application's byte accounting is.
func (c *Context) Quota() int64 { return c.m.cfg.QuotaBytes }

// Session returns the session the current command belongs to, or the zero id
// for an AppCommand or a session lifecycle call about another session.
func (c *Context) Session() SessionID { return c.session }

// Emit queues server-initiated work. payload is copied; emitting the same
// bytes again right after shares that copy (fan-out to many sessions holds
// the payload once), so queued payloads are never modified. It returns
// ErrPayloadTooLarge, ErrSessionNotFound (ToSession of a session that is not
// live), or ErrQueueFull (the target session has
// Config.MaxPendingServerRequests pending, or for a selector no capable
// session has room and the unassigned queue is full). On error nothing is
// queued.
func (c *Context) Emit(t Target, payload []byte) error {
	_, err := c.m.emit(t, payload)
	return err
}

// Place queues server-initiated work exactly like Emit and also says where
// it went: the session the machine chose (for ToCapable, the capable session
// with the fewest unacknowledged requests, ties broken by the smaller id)
// and the request id it got there, or Queued when no capable session had
// room and the work waits in the unassigned queue (it is then given to the
// first capable session that opens or frees room, which the application
// does not hear about). Selector-addressed work that moves to another
// session because its session went away gets a new id there; an application
// that follows its work should therefore identify it by its payload (for
// example a job id inside it), as AckObserver and SessionClosed's dropped
// list hand payloads back. The errors are Emit's.
func (c *Context) Place(t Target, payload []byte) (Placement, error) {
	return c.m.emit(t, payload)
}

// Pending returns the number of unacknowledged server requests queued for a
// session (0 if it is not live), so that an application can apply its own
// back-pressure before Emit fails.
func (c *Context) Pending(id SessionID) int {
	if s := c.m.sessions[id]; s != nil {
		return len(s.pending)
	}
	return 0
}
