package fsm_test

import (
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// batchRecorder is a BatchObserver that keeps each call's notices.
type batchRecorder struct {
	recorder
	calls [][]fsm.Notice
}

func (b *batchRecorder) Notices(list []fsm.Notice) {
	b.calls = append(b.calls, append([]fsm.Notice(nil), list...))
}

// TestBatchObserverHearsEachCommandOnce: a BatchObserver gets one call per
// applied command with every notice in the order the command made them (a
// fan-out to several sessions, then a close's removal), and none through
// the one-by-one methods.
func TestBatchObserverHearsEachCommandOnce(t *testing.T) {
	obs := &batchRecorder{}
	app := &fanApp{}
	m, err := fsm.New(app, fsm.DefaultConfig(), obs)
	if err != nil {
		t.Fatal(err)
	}
	now := fsm.ClusterTime(1_000_000_000_000)
	ids := []fsm.SessionID{{15: 1}, {15: 2}, {15: 3}}
	for i, id := range ids {
		now = now.Add(time.Millisecond)
		if _, err := m.Apply(fsm.EncodeCommand(nil, fsm.OpenSession{Time: now, ID: id, Nonce: uint64(i + 1), Timeout: time.Second})); err != nil {
			t.Fatal(err)
		}
	}
	if len(obs.calls) != 0 {
		t.Fatalf("opening sessions made %d calls", len(obs.calls))
	}
	now = now.Add(time.Millisecond)
	if _, err := m.Apply(fsm.EncodeCommand(nil, fsm.AppCommand{Time: now, Payload: []byte("note")})); err != nil {
		t.Fatal(err)
	}
	if len(obs.calls) != 1 || len(obs.calls[0]) != 3 {
		t.Fatalf("fan-out to 3 sessions: calls %v", obs.calls)
	}
	for i, n := range obs.calls[0] {
		if n.Session != ids[i] || n.Removed != 0 || n.Request.ID != 1 || string(n.Request.Payload) != "note" {
			t.Fatalf("notice %d: %+v", i, n)
		}
	}
	now = now.Add(time.Millisecond)
	if _, err := m.Apply(fsm.EncodeCommand(nil, fsm.CloseSession{Time: now, Session: ids[1]})); err != nil {
		t.Fatal(err)
	}
	if len(obs.calls) != 2 || len(obs.calls[1]) != 1 || obs.calls[1][0].Session != ids[1] || obs.calls[1][0].Removed != fsm.RemovedClosed {
		t.Fatalf("close: calls %v", obs.calls)
	}
	if len(obs.added) != 0 || len(obs.removed) != 0 {
		t.Fatalf("one-by-one methods called: %v %v", obs.added, obs.removed)
	}
}
