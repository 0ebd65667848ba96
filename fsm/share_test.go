package fsm_test

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// fanApp emits every command's payload to every open session, as a kv
// write emits its notification to every watcher of the key.
type fanApp struct{ sessions []fsm.SessionID }

func (a *fanApp) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	for _, id := range a.sessions {
		if err := ctx.Emit(fsm.ToSession(id), cmd); err != nil {
			return nil, err
		}
	}
	// The application may reuse its buffer once Emit returned: the
	// queued work must not change with it.
	for i := range cmd {
		cmd[i] = '!'
	}
	return nil, nil
}
func (a *fanApp) Query([]byte) ([]byte, error) { return nil, nil }
func (a *fanApp) SessionOpened(_ *fsm.Context, info fsm.SessionInfo) error {
	a.sessions = append(a.sessions, info.ID)
	return nil
}
func (a *fanApp) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {}
func (a *fanApp) SaveSnapshot(io.Writer) error                                                     { return nil }
func (a *fanApp) RecoverFromSnapshot(io.Reader) error                                              { return nil }

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestFanOutHoldsOnePayloadCopy: one write that emits the same 64 KiB
// notification to 200 sessions costs the state machine about one copy of
// the payload, not 200 (12.5 MiB), both when applied and after a snapshot
// is restored; every recipient still gets the bytes that were emitted.
func TestFanOutHoldsOnePayloadCopy(t *testing.T) {
	const sessions, size = 200, 64 << 10
	cfg := fsm.DefaultConfig()
	app := &fanApp{}
	m, err := fsm.New(app, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := fsm.ClusterTime(1_000_000_000_000)
	for i := range sessions {
		id := fsm.SessionID{14: byte(i >> 8), 15: byte(i)}
		now = now.Add(time.Millisecond)
		if _, err := m.Apply(fsm.EncodeCommand(nil, fsm.OpenSession{Time: now, ID: id, Nonce: uint64(i + 1), Timeout: 10 * time.Second})); err != nil {
			t.Fatal(err)
		}
	}
	payload := bytes.Repeat([]byte("n"), size)
	cmd := fsm.EncodeCommand(nil, fsm.AppCommand{Time: now.Add(time.Millisecond), Payload: payload})
	before := heapInUse()
	if _, err := m.Apply(cmd); err != nil {
		t.Fatal(err)
	}
	grew := int64(heapInUse()) - int64(before)
	check := func(m *fsm.Machine, what string) {
		t.Helper()
		for _, id := range app.sessions {
			reqs, err := m.Pending(id, 0, 0)
			if err != nil || len(reqs) != 1 || !bytes.Equal(reqs[0].Payload, payload) {
				t.Fatalf("%s: session %v pending %d requests (err %v), payload intact: %v", what, id, len(reqs), err,
					len(reqs) == 1 && bytes.Equal(reqs[0].Payload, payload))
			}
		}
	}
	check(m, "applied")
	// One copy (64 KiB) plus about 100 bytes of queue entry per session;
	// a copy per session would be 12.5 MiB.
	if limit := int64(4 * size); grew > limit {
		t.Fatalf("applying the fan-out grew the heap by %d bytes, want at most %d (one payload copy)", grew, limit)
	}

	var snap bytes.Buffer
	if err := m.SaveSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	restored, err := fsm.New(&fanApp{}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(m)
	m = nil
	data := snap.Bytes()
	before = heapInUse()
	if err := restored.RecoverFromSnapshot(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	grew = int64(heapInUse()) - int64(before)
	runtime.KeepAlive(data)
	check(restored, "restored")
	// Sessions themselves cost a few hundred bytes each once restored.
	if limit := int64(4*size + sessions*2048); grew > limit {
		t.Fatalf("restoring grew the heap by %d bytes, want at most %d (one payload copy)", grew, limit)
	}
}
