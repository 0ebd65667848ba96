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
	"bytes"
	"encoding/binary"
	"io"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/zraft/zraft/fsm"
)

// StateMachine wraps an fsm.Machine as a dragonboat IStateMachine.
type StateMachine struct {
	m    *fsm.Machine
	opts Options
	// last is the index of the previous entry applied, 0 after a start or
	// a snapshot recovery (then the next entry sets it).
	last uint64
}

// Monitor observes what a replica applies. Its methods run on dragonboat's
// apply goroutine: they must be quick, and they must not call into the
// NodeHost.
type Monitor interface {
	// Checkpoint gives this replica's state hash right after it applied
	// the entry at index (a checkpoint: see Options.HashEvery).
	Checkpoint(index, hash uint64)
	// Report gives a replicated hash report: member reporter's state hash
	// right after the entry at index.
	Report(index, hash, reporter uint64)
	// Undecodable tells that the entry at index could not be decoded
	// (err wraps fsm.ErrUnknownVersion) and was skipped.
	Undecodable(index uint64, err error)
}

// Options tune the wrapper. The zero value checks nothing.
type Options struct {
	// HashEvery > 0 makes a checkpoint at the first entry applied in each
	// run of HashEvery log indexes (indexes k*HashEvery .. (k+1)*HashEvery-1):
	// the same entries on every replica, since all apply the same log. A
	// replica that recovered from a snapshot starts checkpointing at the
	// next run. Hashing costs one pass over the state (like a snapshot).
	HashEvery uint64
	// Monitor receives checkpoints, reports and undecodable entries; nil
	// discards them.
	Monitor Monitor
}

// reportMagic starts a hash report entry. fsm commands start with their
// version byte, which is far below 0xFF.
var reportMagic = []byte{0xFF, 'z', 'h', 'r'}

const reportSize = 4 + 3*8

// EncodeHashReport returns the log entry that reports member reporter's
// state hash at index. Propose it like any command; every replica's
// Monitor receives it in Report and the fsm never sees it.
func EncodeHashReport(index, hash, reporter uint64) []byte {
	b := append(make([]byte, 0, reportSize), reportMagic...)
	b = binary.BigEndian.AppendUint64(b, index)
	b = binary.BigEndian.AppendUint64(b, hash)
	return binary.BigEndian.AppendUint64(b, reporter)
}

func decodeHashReport(b []byte) (index, hash, reporter uint64, ok bool) {
	if len(b) != reportSize || !bytes.HasPrefix(b, reportMagic) {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint64(b[12:]), binary.BigEndian.Uint64(b[20:]), true
}

var (
	_ sm.IStateMachine = (*StateMachine)(nil)
	_ sm.IHash         = (*StateMachine)(nil)
)

// New wraps m. The StateMachine takes ownership of m: nothing else may call
// m's methods while dragonboat runs it.
func New(m *fsm.Machine) *StateMachine { return &StateMachine{m: m} }

// NewWith wraps m with options.
func NewWith(m *fsm.Machine, opts Options) *StateMachine { return &StateMachine{m: m, opts: opts} }

// FactoryWith is Factory with options for every machine it builds.
func FactoryWith(newMachine func(shardID, replicaID uint64) *fsm.Machine, opts Options) sm.CreateStateMachineFunc {
	return func(shardID, replicaID uint64) sm.IStateMachine {
		return NewWith(newMachine(shardID, replicaID), opts)
	}
}

// Factory returns a dragonboat factory that wraps the machine newMachine
// builds for each (shard, replica). newMachine must return a fresh, empty
// machine each time (dragonboat rebuilds state from snapshots and the log).
func Factory(newMachine func(shardID, replicaID uint64) *fsm.Machine) sm.CreateStateMachineFunc {
	return func(shardID, replicaID uint64) sm.IStateMachine {
		return New(newMachine(shardID, replicaID))
	}
}

// Update applies one entry. It never returns an error: dragonboat stops
// (panics) on one, and would again on every restart while the entry is in
// the log. An entry the fsm cannot decode (fsm.ErrUnknownVersion: written by
// a newer binary, or forged) is skipped with a StatusInvalid result and
// reported to the Monitor; the state hash check then tells whether this
// replica now differs from the others (see docs/operations.md for the
// recovery).
func (s *StateMachine) Update(e sm.Entry) (sm.Result, error) {
	defer s.checkpoint(e.Index)
	if index, hash, reporter, ok := decodeHashReport(e.Cmd); ok {
		if s.opts.Monitor != nil {
			s.opts.Monitor.Report(index, hash, reporter)
		}
		return sm.Result{}, nil
	}
	r, err := s.m.Apply(e.Cmd)
	if err != nil {
		if s.opts.Monitor != nil {
			s.opts.Monitor.Undecodable(e.Index, err)
		}
		return sm.Result{Value: uint64(fsm.StatusInvalid)}, nil
	}
	return sm.Result{Value: r.Value, Data: r.Data}, nil
}

// checkpoint hashes the state after the first entry of each run of
// HashEvery indexes.
func (s *StateMachine) checkpoint(index uint64) {
	n := s.opts.HashEvery
	if n == 0 {
		return
	}
	last := s.last
	s.last = index
	if last == 0 || index/n == last/n || s.opts.Monitor == nil {
		return
	}
	if h, err := s.m.Hash(); err == nil {
		s.opts.Monitor.Checkpoint(index, h)
	}
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
	s.last = 0
	return s.m.RecoverFromSnapshot(r)
}

// GetHash returns the machine's state hash (dragonboat's optional IHash).
func (s *StateMachine) GetHash() (uint64, error) { return s.m.Hash() }

// Close releases nothing: the machine holds only memory.
func (s *StateMachine) Close() error { return nil }
