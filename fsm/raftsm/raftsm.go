// Package raftsm adapts an fsm.Machine to dragonboat v4's
// statemachine.IStateMachine, the in-memory state machine kind. It is a
// separate package so that importing fsm (for example for its command and
// result encodings) does not link dragonboat.
//
// Why the in-memory kind: the whole replicated state (sessions, caches,
// queues, the application's data) lives in Go maps, so the machine is rebuilt
// on restart from the latest snapshot plus the log after it. dragonboat holds
// a RWMutex around it: Update and RecoverFromSnapshot under the write lock,
// Lookup and SaveSnapshot under the read lock, which is exactly the
// concurrency fsm.Machine supports. An on-disk machine would need its own
// storage engine and its own idempotent apply; the concurrent kind would need
// copy-on-write state for snapshots. Neither pays off while the state fits in
// memory.
//
// Deduplication is zraft's own (fsm sessions), so proposers use dragonboat's
// no-op session (NodeHost.GetNoOPSession): dragonboat's client sessions are
// capped at 4096 per shard and are not available to on-disk machines.
package raftsm

import (
	"io"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/zraft/zraft/fsm"
)

// StateMachine wraps an fsm.Machine as a dragonboat IStateMachine.
type StateMachine struct {
	m *fsm.Machine
}

var (
	_ sm.IStateMachine = (*StateMachine)(nil)
	_ sm.IHash         = (*StateMachine)(nil)
)

// New wraps m. The StateMachine takes ownership of m: nothing else may call
// m's methods while dragonboat runs it.
func New(m *fsm.Machine) *StateMachine { return &StateMachine{m: m} }

// Factory returns a dragonboat factory that wraps the machine newMachine
// builds for each (shard, replica). newMachine must return a fresh, empty
// machine each time (dragonboat rebuilds state from snapshots and the log).
func Factory(newMachine func(shardID, replicaID uint64) *fsm.Machine) sm.CreateStateMachineFunc {
	return func(shardID, replicaID uint64) sm.IStateMachine {
		return New(newMachine(shardID, replicaID))
	}
}

// Update applies one entry. The returned error stops the node; it is only
// fsm.ErrUnknownVersion (a log written by a newer binary).
func (s *StateMachine) Update(e sm.Entry) (sm.Result, error) {
	r, err := s.m.Apply(e.Cmd)
	if err != nil {
		return sm.Result{}, err
	}
	return sm.Result{Value: r.Value, Data: r.Data}, nil
}

// Lookup answers a query value; see fsm.Machine.Lookup for the accepted
// types (fsm.SessionQuery, fsm.SessionsQuery, fsm.PendingQuery,
// fsm.StatsQuery, fsm.HashQuery, or []byte for the application).
func (s *StateMachine) Lookup(q any) (any, error) { return s.m.Lookup(q) }

// SaveSnapshot writes the machine's snapshot. It checks done once before
// starting: the snapshot of an in-memory machine is quick relative to the
// shutdown it would race.
func (s *StateMachine) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, done <-chan struct{}) error {
	select {
	case <-done:
		return sm.ErrSnapshotStopped
	default:
	}
	return s.m.SaveSnapshot(w)
}

// RecoverFromSnapshot replaces the machine's state with a snapshot.
func (s *StateMachine) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, done <-chan struct{}) error {
	select {
	case <-done:
		return sm.ErrSnapshotStopped
	default:
	}
	return s.m.RecoverFromSnapshot(r)
}

// GetHash returns the machine's state hash (dragonboat's optional IHash).
func (s *StateMachine) GetHash() (uint64, error) { return s.m.Hash() }

// Close releases nothing: the machine holds only memory.
func (s *StateMachine) Close() error { return nil }
