// Package actors holds the actors of a zraft node, one file per actor kind
// with its messages next to it. Each file's opening comment says what the
// actor owns, who spawns and supervises it, and when it stops.
//
// Actors reach the outside world only through the small interfaces declared
// here (Conns for client connections, Raft for dragonboat); package node wires
// the concrete transport.Router and dragonboat.NodeHost behind them. Every
// actor follows the same rules: Receive never blocks (calls that wait, such as
// Raft proposals, run on goroutines owned by the raft bridge and come back as
// messages), every map and queue has a bound with a stated error, expected
// failures are replies, and a panic means a broken invariant, after which the
// supervisor restarts the actor with state rebuilt from the replicated state
// machine, the directory, or the client's retry.
package actors

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/supervision"
)

// ConnID identifies a client connection; the transport assigns it.
type ConnID uint64

// Conns sends frames to client connections. transport.Router implements it
// (through node's adapter). Send never blocks; a full queue closes that
// connection inside the transport.
type Conns interface {
	Send(conn ConnID, frame []byte) error
	CloseConn(conn ConnID) error
}

// Raft is the bridge's view of dragonboat. Calls block until done or ctx
// ends, so only the bridge's own goroutines make them.
type Raft interface {
	// Propose replicates cmd and returns the state machine's result.
	Propose(ctx context.Context, cmd []byte) (value uint64, data []byte, err error)
	// Start queues cmd for replication and returns as soon as it is queued,
	// without waiting for the outcome. Commands started one after another
	// (one Start returning before the next is called) enter the log in that
	// order within a term, which is how Work keeps a session's batches in
	// arrival order while several are in flight. An error means cmd was not
	// queued (ErrOverloaded when dragonboat's queue is full). Otherwise the
	// caller must call the Proposal's Wait exactly once.
	Start(ctx context.Context, cmd []byte) (Proposal, error)
	// Read performs a linearizable (ReadIndex) lookup of query.
	Read(ctx context.Context, query any) (any, error)
	// ReadBatch performs one ReadIndex round and then looks every query up;
	// each query that arrived before the call is read linearizably. err
	// reports a failed round (then no query was looked up); errs[i] is the
	// lookup error of queries[i].
	ReadBatch(ctx context.Context, queries []any) (results []any, errs []error, err error)
	// StaleRead looks query up in this replica's applied state.
	StaleRead(query any) (any, error)
	// TransferLeadership asks the leader to hand over to target.
	TransferLeadership(target uint64) error
}

// Proposal is a command queued by Raft.Start.
type Proposal interface {
	// Wait blocks until the command was applied (its result), failed, or
	// ctx ended (ErrOutcomeUnknown), and then releases the proposal.
	Wait(ctx context.Context) (value uint64, data []byte, err error)
}

// Member is a cluster member as clients see it.
type Member struct {
	ID         uint64
	ClientAddr string
}

// Settings are the values the actors need from the node's config.
type Settings struct {
	NodeID            uint64
	Members           []Member
	KeepAliveInterval time.Duration
	// KeepAliveFastPath answers keep-alives on the connection's goroutine
	// (liveness.go) instead of in the session actor (node default: on).
	KeepAliveFastPath bool
	SessionTimeout    time.Duration
	ProposalTimeout   time.Duration
	AckBatchInterval  time.Duration
	RedeliverInterval time.Duration
	MaxInFlight       int
	MaxProposals      int
	SessionCreateRate int
	// MaxSessionsPerSource bounds the sessions this node serves for one
	// source (0: no bound); past it CreateSession and ContinueSession get
	// TooManySessions.
	MaxSessionsPerSource int
	// MaxSessionBytes bounds the payload bytes of one session's commands
	// and queries admitted and not yet answered (0: no bound); past it the
	// client gets Overloaded.
	MaxSessionBytes int
	// MaxCommandBytes is the largest command the application accepts
	// (0: no bound below the protocol's); a larger one is answered
	// TooLarge and never proposed.
	MaxCommandBytes int
	// ServerRequestWindow bounds the server requests a session has sent
	// and not seen acknowledged (0: the protocol's 64).
	ServerRequestWindow int
	Limits              codec.Limits
	Supervision         supervision.Limits
}

// Refs are the PIDs of the tree's fixed actors. Restarts keep a PID, so the
// references stay valid for the node's life.
type Refs struct {
	Gateway    *actor.PID
	Sessions   *actor.PID
	KeepAlive  *actor.PID
	Raft       *actor.PID
	Dispatcher *actor.PID
}

// Env is what every actor of a node shares: settings, references, the outside
// world, metrics and logging. It is built once by node and never mutated.
type Env struct {
	Settings Settings
	Refs     Refs
	Conns    Conns
	Raft     Raft
	Work     *Work
	Inbox    *Inbox
	// Bytes is the node-wide budget of command and query payload bytes
	// admitted and not yet answered; nil: none.
	Bytes   *ByteBudget
	Metrics *Metrics
	Log     *slog.Logger
	Faults  *supervision.Faults // nil outside tests
	// TreeUp is set by the node once every actor of the tree is spawned;
	// before that, actors must not post to siblings spawned after them.
	TreeUp atomic.Bool
	// Now is the clock; tests may replace it. Default time.Now.
	Now func() time.Time
	// Directory, when set, is the replicated member directory; it takes
	// over from Settings.Members once it holds members.
	Directory *Directory
	// Scheduler, when set, runs the mailboxes of every actor spawned with
	// Props (see Scheduler); nil keeps protoactor's goroutine per
	// activation.
	Scheduler *Scheduler
}

// send encodes m and sends it to conn. Encoding failures are programmer
// errors for server messages (every field is produced here), so they are
// logged and counted rather than crashing the caller.
func (e *Env) send(conn ConnID, m codec.Message) { e.sendVia(conn, m, false) }

// NowSender is implemented by Conns that can write a small answer on the
// caller's goroutine when the connection is idle (transport.Router.SendNow).
type NowSender interface {
	SendNow(conn ConnID, frame []byte) error
}

// sendNow is send for a small answer to a likely idle connection (a
// keep-alive's): written on this goroutine with one non-blocking write if
// the connection is idle (no writer goroutine started for it), queued as
// usual otherwise. It never blocks.
func (e *Env) sendNow(conn ConnID, m codec.Message) { e.sendVia(conn, m, true) }

func (e *Env) sendVia(conn ConnID, m codec.Message, now bool) {
	e.clipMessage(m)
	hintOnlyWhereActionable(m)
	frame, err := codec.Append(make([]byte, 0, 64), m, &e.Settings.Limits)
	if err != nil {
		e.Log.Error("encode reply", "kind", m.Kind(), "err", err)
		e.Metrics.EncodeErrors.Inc()
		return
	}
	if ns, ok := e.Conns.(NowSender); ok && now {
		err = ns.SendNow(conn, frame)
	} else {
		err = e.Conns.Send(conn, frame)
	}
	if err == nil {
		e.Metrics.MessagesOut.WithLabelValues(m.Kind().String()).Inc()
	}
}

// clipMessage makes a reply's free-text Message field fit the protocol:
// valid UTF-8, at most MaxString bytes. Application error texts and wrapped
// errors are not under our control, and a reply that failed to encode would
// leave its caller waiting for nothing.
func (e *Env) clipMessage(m codec.Message) {
	var p *string
	switch r := m.(type) {
	case *codec.RequestError:
		p = &r.Message
	case *codec.QueryError:
		p = &r.Message
	case *codec.SessionRejected:
		p = &r.Message
	case *codec.SessionClosed:
		p = &r.Message
	default:
		return
	}
	*p = clip(*p, e.Settings.Limits.MaxString)
}

// hintOnlyWhereActionable enforces protocol.md §6: a leader hint is carried
// only with NotLeader and ShuttingDown, the codes that tell the client to go
// to the leader. With any other code (ClusterUnavailable from a leader that
// is not ready yet, SessionMoved, ...) a hint naming this node or a stale
// leader would only send the client in circles, so it is zero.
func hintOnlyWhereActionable(m codec.Message) {
	var code codec.Code
	var h *codec.LeaderHint
	switch r := m.(type) {
	case *codec.RequestError:
		code, h = r.Reason, &r.Leader
	case *codec.QueryError:
		code, h = r.Reason, &r.Leader
	case *codec.SessionRejected:
		code, h = r.Reason, &r.Leader
	case *codec.SessionClosed:
		code, h = r.Reason, &r.Leader
	default:
		return
	}
	if code != codec.CodeNotLeader && code != codec.CodeShuttingDown {
		*h = codec.LeaderHint{}
	}
}

func clip(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Props returns props for an actor of kind with the tree's supervision and
// any test fault injection.
func (e *Env) Props(kind string, producer actor.Producer) *actor.Props {
	p := supervision.Props(actor.PropsFromProducer(producer), kind, e.Settings.Supervision, e.Faults)
	if e.Scheduler != nil {
		p.Configure(actor.WithDispatcher(e.Scheduler))
	}
	return p
}

// debug logs a session-lifecycle event (binds, unbinds, restarts, liveness
// loads, expiries) at debug level, for tracing a session through faults;
// nothing is formatted unless the logger is at debug level.
func (e *Env) debug(msg string, args ...any) {
	if e.Log == nil || !e.Log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	e.Log.Debug(msg, args...)
}
