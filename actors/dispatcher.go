// dispatcher: server-initiated requests.
//
// Owns: the relay from the state machine's Observer (which runs on
// dragonboat's apply goroutine and must not block) to the actors, and the
// batching of acknowledgements: acks from session actors are gathered for
// AckBatchInterval and recorded with one AckServerRequests proposal, at
// most one in flight (acks arriving meanwhile go in the next, sent as soon
// as the one in flight is answered). The
// batch holds at most one entry per session (a later ack supersedes an
// earlier one because acks are cumulative), so it is bounded by the number
// of live sessions.
//
// On the leader, new work (ServerRequestAdded) goes to the session directory,
// which hands it to the session's actor; the session actor delivers and
// retries it. Removed sessions are reported to the directory and the
// keepalive actor. Followers ignore the relay: their queues live in the
// replicated state and are read back by whoever becomes leader.
//
// The relay is bounded (MaxInbox notices waiting); past the bound a notice is
// dropped and counted, and the dispatcher asks every session actor to re-read
// its pending work from the replicated state, so nothing is lost for long.
// Spawned by the node root, supervised by it; a restart loses at most the
// acks of one batch interval, which clients' later cumulative acks cover.
package actors

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/fsm"
)

// Acked is sent by a session actor when its client acknowledges work.
type Acked struct {
	Session fsm.SessionID
	UpTo    uint64
}

type workAdded struct {
	session fsm.SessionID
	req     fsm.ServerRequest
}

// notices is every notice of one applied command (fsm.BatchObserver).
type notices struct{ list []fsm.Notice }

// DeliverBatch hands server requests to many sessions' actors at once: the
// dispatcher sends one per applied command that queued work for several
// sessions (a kv write notifying its watchers), so the directory handles
// one message for the whole fan-out. Each Deliver names a different
// session.
type DeliverBatch struct{ Delivers []Deliver }

type flushAcks struct{}

type ackTag struct{ acks []fsm.Ack }

// Observer implements fsm.Observer by relaying to the dispatcher.
type Observer struct {
	root       *actor.RootContext
	dispatcher *actor.PID
	max        int64
	pending    atomic.Int64
	dropped    atomic.Bool
	gate       sync.RWMutex // held shared by post, exclusively by Pause
	// leader, directory and notes relay leader-only notes (notify.go).
	leader    atomic.Bool
	directory atomic.Pointer[actor.PID]
	notes     noteBox
}

// NewObserver returns an observer relaying at most max notices at a time.
func NewObserver(system *actor.ActorSystem, dispatcher *actor.PID, max int) *Observer {
	return &Observer{root: system.Root, dispatcher: dispatcher, max: int64(max)}
}

func (o *Observer) post(msg any) {
	o.gate.RLock()
	defer o.gate.RUnlock()
	if o.pending.Add(1) > o.max {
		o.pending.Add(-1)
		o.dropped.Store(true)
		return
	}
	o.root.Send(o.dispatcher, msg)
}

// Pause holds off every notice until the returned function is called; the
// node pauses while it spawns the dispatcher afresh (see Inbox.Pause).
func (o *Observer) Pause() (resume func()) {
	o.gate.Lock()
	return o.gate.Unlock
}

// Reconcile sets the count of notices in flight to zero and marks notices
// as dropped. The node calls it when it starts the dispatcher afresh after
// its supervisor stopped it: the notices in the stopped mailbox were lost
// without being released, so their slots are given back, and the dispatcher
// has every session re-read its pending work (as after any drop).
func (o *Observer) Reconcile() {
	o.pending.Store(0)
	o.dropped.Store(true)
}

// Pending returns the number of notices posted and not yet handled.
func (o *Observer) Pending() int64 { return o.pending.Load() }

// Dropped releases the notices of a message whose handling panicked (the
// supervisor calls it: protoactor never delivers that message again) and
// marks notices as dropped, so that the dispatcher has every session
// re-read its pending work. Other messages are ignored.
func (o *Observer) Dropped(msg any) {
	switch m := msg.(type) {
	case *workAdded, *SessionRemoved:
		o.pending.Add(-1)
	case *notices:
		o.pending.Add(-int64(len(m.list)))
	default:
		return
	}
	o.dropped.Store(true)
}

// ServerRequestAdded implements fsm.Observer.
func (o *Observer) ServerRequestAdded(session fsm.SessionID, req fsm.ServerRequest) {
	o.post(&workAdded{session: session, req: req})
}

// Notices implements fsm.BatchObserver: every notice of one applied
// command is one message to the dispatcher. It counts as len(list) notices
// against the bound, so a command's fan-out is relayed whole or, past the
// bound, dropped whole (and every session re-reads its pending work).
func (o *Observer) Notices(list []fsm.Notice) {
	if len(list) == 0 {
		return
	}
	o.gate.RLock()
	defer o.gate.RUnlock()
	n := int64(len(list))
	if o.pending.Add(n) > o.max {
		o.pending.Add(-n)
		o.dropped.Store(true)
		return
	}
	// The machine reuses its list; payloads are immutable and kept as is.
	o.root.Send(o.dispatcher, &notices{list: slices.Clone(list)})
}

// SessionRemoved implements fsm.Observer.
func (o *Observer) SessionRemoved(session fsm.SessionID, reason fsm.RemoveReason) {
	o.post(&SessionRemoved{Session: session, Reason: reason})
}

type dispatcher struct {
	env    *Env
	obs    *Observer
	leader bool
	acks   map[fsm.SessionID]uint64
	timer  *time.Timer
	// ackSent is when the acknowledgement proposal in flight was sent
	// (zero when none is): at most one is in flight, and the acks that
	// arrive meanwhile wait for its outcome, so a fan-out whose
	// acknowledgements keep coming costs one entry per commit round, not
	// one per AckBatchInterval. A proposal unanswered for twice the
	// proposal timeout (its reply lost to a bridge restart) no longer
	// holds the next one back.
	ackSent time.Time
}

// NewDispatcher returns the producer of the dispatcher actor.
func NewDispatcher(env *Env, obs *Observer) actor.Producer {
	return func() actor.Actor { return &dispatcher{env: env, obs: obs, acks: make(map[fsm.SessionID]uint64)} }
}

func (d *dispatcher) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		c.Request(d.env.Refs.Raft, &LeaderQuery{})
	case *actor.Stopping, *actor.Restarting:
		if d.timer != nil {
			d.timer.Stop()
			d.timer = nil
		}
	case *LeaderChanged:
		d.leader = m.IsLeader
		d.obs.SetLeader(m.IsLeader, d.env.Refs.Sessions)
		if !m.IsLeader {
			clear(d.acks)
			d.ackSent = time.Time{}
		}
	case *workAdded:
		d.obs.pending.Add(-1)
		d.resyncIfDropped(c)
		if d.leader {
			c.Send(d.env.Refs.Sessions, &Deliver{Session: m.session, Reqs: []fsm.ServerRequest{m.req}})
		}
	case *notices:
		d.obs.pending.Add(-int64(len(m.list)))
		d.resyncIfDropped(c)
		d.relay(c, m.list)
	case *SessionRemoved:
		d.obs.pending.Add(-1)
		d.resyncIfDropped(c)
		d.removed(c, m)
	case *Acked:
		if d.leader && m.UpTo > d.acks[m.Session] {
			d.acks[m.Session] = m.UpTo
			d.arm(c)
		}
	case *flushAcks:
		d.timer = nil
		d.flush(c)
	case *Proposed:
		t, ok := m.Tag.(ackTag)
		if !ok {
			return
		}
		d.ackSent = time.Time{}
		if m.Err != nil && d.leader {
			// Put the acks back (unless superseded) for the next batch.
			for _, a := range t.acks {
				if a.UpTo > d.acks[a.Session] {
					d.acks[a.Session] = a.UpTo
				}
			}
			d.arm(c)
			return
		}
		if d.timer == nil {
			// Acks that waited for this outcome have waited at least
			// as long as a batch interval.
			d.flush(c)
		}
	}
}

func (d *dispatcher) removed(c actor.Context, m *SessionRemoved) {
	delete(d.acks, m.Session)
	if d.leader {
		c.Send(d.env.Refs.Sessions, m)
		c.Send(d.env.Refs.KeepAlive, m)
	}
}

// relay hands one command's notices on, in their order: the work for each
// session gathered into one Deliver, and all of them to the directory as
// one DeliverBatch; a removal first sends the work gathered before it, so
// the directory sees work and removals in the order they happened.
// Followers only forget removed sessions' acks.
func (d *dispatcher) relay(c actor.Context, list []fsm.Notice) {
	var batch []Deliver
	var index map[fsm.SessionID]int
	// One backing array for the requests of the whole list: a session's
	// first request takes a one-element window of it (a second request for
	// the same session grows that session's slice on its own).
	var reqs []fsm.ServerRequest
	send := func() {
		switch len(batch) {
		case 0:
		case 1:
			c.Send(d.env.Refs.Sessions, &batch[0])
		default:
			c.Send(d.env.Refs.Sessions, &DeliverBatch{Delivers: batch})
		}
		batch, index, reqs = nil, nil, nil
	}
	for _, n := range list {
		if n.Removed != 0 {
			send()
			d.removed(c, &SessionRemoved{Session: n.Session, Reason: n.Removed})
			continue
		}
		if !d.leader {
			continue
		}
		if i, ok := index[n.Session]; ok {
			batch[i].Reqs = append(batch[i].Reqs, n.Request)
			continue
		}
		if index == nil {
			index = make(map[fsm.SessionID]int)
		}
		index[n.Session] = len(batch)
		if reqs == nil {
			reqs = make([]fsm.ServerRequest, 0, len(list))
		}
		reqs = append(reqs, n.Request)
		batch = append(batch, Deliver{Session: n.Session, Reqs: reqs[len(reqs)-1 : len(reqs) : len(reqs)]})
	}
	send()
}

// resyncIfDropped makes every session actor re-read its pending work after
// the observer had to drop a notice.
func (d *dispatcher) resyncIfDropped(c actor.Context) {
	if d.obs.dropped.Swap(false) && d.leader {
		c.Send(d.env.Refs.Sessions, &Resync{})
	}
}

func (d *dispatcher) arm(c actor.Context) {
	if d.timer != nil {
		return
	}
	system, self := c.ActorSystem(), c.Self()
	d.timer = time.AfterFunc(d.env.Settings.AckBatchInterval, func() { system.Root.Send(self, &flushAcks{}) })
}

func (d *dispatcher) flush(c actor.Context) {
	if len(d.acks) == 0 || !d.leader {
		return
	}
	if !d.ackSent.IsZero() && d.env.Now().Sub(d.ackSent) < 2*d.env.Settings.ProposalTimeout {
		return // sent when the one in flight is answered
	}
	d.ackSent = d.env.Now()
	acks := make([]fsm.Ack, 0, len(d.acks))
	for s, upTo := range d.acks {
		acks = append(acks, fsm.Ack{Session: s, UpTo: upTo})
	}
	clear(d.acks)
	// Sorted so the proposal's bytes do not depend on map order.
	slices.SortFunc(acks, func(a, b fsm.Ack) int { return a.Session.Compare(b.Session) })
	cmd := fsm.EncodeCommand(nil, fsm.AckServerRequests{Time: fsm.Stamp(d.env.Now()), Acks: acks})
	c.Send(d.env.Refs.Raft, &Propose{Cmd: cmd, ReplyTo: c.Self(), Tag: ackTag{acks: acks}})
}
