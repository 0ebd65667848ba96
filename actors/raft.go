// raft: the bridge between the actor tree and dragonboat.
//
// Owns: nothing durable. It hands proposals and reads to the node's worker
// pool (Env.Work: bounded by MaxProposals, each call by ProposalTimeout,
// outside any actor so a restart cannot lose count) and relays leader
// changes from dragonboat's event listener to the actors that gate on
// leadership. Session actors use the pool directly for client traffic,
// saving a hop; the bridge serves everyone else (user actors included). Spawned by the node root at start, supervised by it, stopped
// when the node closes. A restart loses nothing: proposals in flight finish on
// their goroutines and reply to whoever asked, and the current leader is read
// back from dragonboat in Started.
package actors

import (
	"errors"

	"github.com/asynkron/protoactor-go/actor"
)

// Errors the Raft implementation returns, so actors can map them to wire codes.
var (
	// ErrOverloaded: too much in flight; nothing was proposed, retry later.
	ErrOverloaded = errors.New("actors: overloaded")
	// ErrOutcomeUnknown: the proposal may or may not have been applied.
	ErrOutcomeUnknown = errors.New("actors: outcome unknown")
	// ErrUnavailable: no leader, shard closed, or this node is shutting down.
	ErrUnavailable = errors.New("actors: cluster unavailable")
)

// Propose asks the bridge to replicate Cmd; the reply is *Proposed with Tag.
type Propose struct {
	Cmd     []byte
	ReplyTo *actor.PID
	Tag     any
}

// Proposed is the outcome of a Propose.
type Proposed struct {
	Tag   any
	Value uint64
	Data  []byte
	Err   error
}

// Read asks for a lookup; the reply is *ReadDone with Tag.
type Read struct {
	Query   any
	Stale   bool // read the local applied state without ReadIndex
	ReplyTo *actor.PID
	Tag     any
}

// ReadDone is the outcome of a Read.
type ReadDone struct {
	Tag    any
	Result any
	Err    error
}

// LeaderUpdated is what the node's dragonboat event listener sends the bridge.
type LeaderUpdated struct {
	LeaderID, Term uint64
}

// LeaderChanged is broadcast by the bridge to the actors that gate on
// leadership whenever the leader or term changes, and once at start.
type LeaderChanged struct {
	LeaderID uint64
	Term     uint64
	IsLeader bool
	Hint     Member // the leader's client address when known
}

// LeaderQuery asks the bridge for the current LeaderChanged; actors send it
// (with Request, so the bridge can answer) when they start or restart.
type LeaderQuery struct{}

// TransferLeadership asks the bridge to hand leadership to Target.
type TransferLeadership struct{ Target uint64 }

type raftBridge struct {
	env  *Env
	last LeaderChanged
}

// NewRaft returns the producer of the raft bridge actor.
func NewRaft(env *Env) actor.Producer {
	return func() actor.Actor { return &raftBridge{env: env} }
}

// Leaderer is implemented by Raft implementations that know the current leader.
type Leaderer interface {
	Leader() (leaderID, term uint64, ok bool)
}

func (r *raftBridge) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		l, ok := r.env.Raft.(Leaderer)
		if !ok {
			return
		}
		id, term, _ := l.Leader()
		if !r.env.TreeUp.Load() {
			// First start: siblings may still be spawning, and each asks
			// (LeaderQuery) when it starts. Record without broadcasting.
			r.last = r.changed(id, term)
			return
		}
		// A restart: a change may have happened while the bridge was
		// down (its LeaderUpdated lost with the failed message), so tell
		// everyone what holds now.
		r.last = LeaderChanged{Term: ^uint64(0)}
		r.leader(c, id, term)
	case *Propose:
		r.propose(c, m)
	case *Read:
		r.read(c, m)
	case *LeaderQuery:
		if c.Sender() != nil {
			ev := r.last
			c.Respond(&ev)
		}
	case *LeaderUpdated:
		r.leader(c, m.LeaderID, m.Term)
	case *TransferLeadership:
		if err := r.env.Raft.TransferLeadership(m.Target); err != nil {
			r.env.Log.Warn("leadership transfer", "target", m.Target, "err", err)
		}
	}
}

// changed builds the LeaderChanged event for a leader and term.
func (r *raftBridge) changed(id, term uint64) LeaderChanged {
	ev := LeaderChanged{LeaderID: id, Term: term, IsLeader: id != 0 && id == r.env.Settings.NodeID}
	for _, m := range r.env.members() {
		if m.ID == id {
			ev.Hint = m
		}
	}
	return ev
}

func (r *raftBridge) leader(c actor.Context, id, term uint64) {
	if id == r.last.LeaderID && term == r.last.Term {
		return
	}
	ev := r.changed(id, term)
	if id != r.last.LeaderID {
		r.env.Metrics.LeaderChanges.Inc()
	}
	r.last = ev
	if ev.IsLeader {
		r.env.Metrics.IsLeader.Set(1)
	} else {
		r.env.Metrics.IsLeader.Set(0)
	}
	for _, pid := range []*actor.PID{r.env.Refs.Sessions, r.env.Refs.KeepAlive, r.env.Refs.Dispatcher} {
		if pid != nil {
			e := ev
			c.Send(pid, &e)
		}
	}
}

func (r *raftBridge) propose(c actor.Context, m *Propose) {
	r.env.Work.Propose(c.ActorSystem(), m.Cmd, m.ReplyTo, m.Tag)
}

func (r *raftBridge) read(c actor.Context, m *Read) {
	r.env.Work.Read(c.ActorSystem(), m.Query, m.Stale, m.ReplyTo, m.Tag)
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	case errors.Is(err, ErrOutcomeUnknown):
		return "timeout"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	default:
		return "error"
	}
}
