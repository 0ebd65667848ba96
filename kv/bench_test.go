package kv_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
)

// BenchmarkApplySet measures one kv set through the session layer: decoding
// the log entry, deduplication and watermark bookkeeping, the store's update
// and caching the result. 1,000 distinct keys, 64-byte values, one session
// that keeps a single request in flight.
func BenchmarkApplySet(b *testing.B) {
	c := newCluster(b, kv.DefaultConfig(), fsm.DefaultConfig())
	a := sid(1)
	c.open(a)
	payloads := make([][]byte, 1000)
	for i := range payloads {
		payloads[i] = kv.EncodeSet(fmt.Sprintf("key-%04d", i), make([]byte, 64))
	}
	buf := make([]byte, 0, 256)
	now := c.now
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uint64(i + 1)
		now = now.Add(time.Microsecond)
		buf = fsm.EncodeCommand(buf[:0], fsm.ClientRequest{Time: now, Session: a, RequestID: id, LowestPending: id,
			Payload: payloads[i%len(payloads)]})
		r, err := c.m.Apply(buf)
		if err != nil || r.Value != uint64(fsm.StatusOK) {
			b.Fatalf("apply: %v %v", r, err)
		}
	}
}

// noteSink is a NoteObserver that only counts the notes it is handed, as a
// follower's observer drops them.
type noteSink struct{ notes int }

func (*noteSink) ServerRequestAdded(fsm.SessionID, fsm.ServerRequest) {}
func (*noteSink) SessionRemoved(fsm.SessionID, fsm.RemoveReason)      {}
func (n *noteSink) Notes(list []fsm.Note)                             { n.notes += len(list) }

// BenchmarkSetWatched measures the state machine's side of a kv watch
// fan-out: one set of a key that 1,000 sessions watch, which hands one
// leader-only note (the 1,000 recipients and one payload) to the observer;
// nothing is queued or acknowledged. Per op: one write and its note.
func BenchmarkSetWatched(b *testing.B) {
	const watchers = 1000
	store, err := kv.New(kv.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	sink := &noteSink{}
	m, err := fsm.New(store, fsm.DefaultConfig(), sink)
	if err != nil {
		b.Fatal(err)
	}
	now := fsm.ClusterTime(1e12)
	apply := func(cmd fsm.Command) fsm.Result {
		r, err := m.Apply(fsm.EncodeCommand(nil, cmd))
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	ids := make([]fsm.SessionID, watchers+1)
	for i := range ids {
		ids[i] = fsm.SessionID{14: byte((i + 1) >> 8), 15: byte(i + 1)}
		now = now.Add(time.Microsecond)
		apply(fsm.OpenSession{Time: now, ID: ids[i], Nonce: uint64(i + 1), Timeout: time.Hour})
	}
	writer := ids[watchers]
	for i, id := range ids[:watchers] {
		now = now.Add(time.Microsecond)
		if r := apply(fsm.ClientRequest{Time: now, Session: id, RequestID: 1, LowestPending: 1, Payload: kv.EncodeWatch("hot")}); r.Value != uint64(fsm.StatusOK) {
			b.Fatalf("watch %d: %v", i, r)
		}
	}
	value := make([]byte, 64)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uint64(i + 1)
		now = now.Add(time.Microsecond)
		buf = fsm.EncodeCommand(buf[:0], fsm.ClientRequest{Time: now, Session: writer, RequestID: id, LowestPending: id,
			Payload: kv.EncodeSet("hot", value)})
		if r, err := m.Apply(buf); err != nil || r.Value != uint64(fsm.StatusOK) {
			b.Fatalf("set: %v %v", r, err)
		}
	}
	b.StopTimer()
	if sink.notes != b.N {
		b.Fatalf("%d notes for %d writes", sink.notes, b.N)
	}
}
