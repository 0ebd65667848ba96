package fsm_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// noteApp notifies every open session of each command's bytes with
// Context.Notify, then scribbles over its buffers (the machine must have
// copied them).
type noteApp struct {
	sessions []fsm.SessionID
	errs     []error
}

func (a *noteApp) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	if err := ctx.Notify("t", a.sessions, cmd); err != nil {
		a.errs = append(a.errs, err)
	}
	for i := range cmd {
		cmd[i] = '!'
	}
	for i := range a.sessions {
		a.sessions[i] = fsm.SessionID{}
	}
	return nil, nil
}
func (a *noteApp) Query([]byte) ([]byte, error) { return nil, nil }
func (a *noteApp) SessionOpened(_ *fsm.Context, info fsm.SessionInfo) error {
	a.sessions = append(a.sessions, info.ID)
	return nil
}
func (a *noteApp) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {}
func (a *noteApp) SaveSnapshot(io.Writer) error                                                     { return nil }
func (a *noteApp) RecoverFromSnapshot(io.Reader) error                                              { return nil }

type noteRecorder struct {
	recorder
	calls [][]fsm.Note
}

func (r *noteRecorder) Notes(list []fsm.Note) {
	r.calls = append(r.calls, append([]fsm.Note(nil), list...))
}

// TestNotifyReachesObserverAndLeavesStateAlone: a note goes to a
// NoteObserver once per applied entry with its own copy of recipients and
// payload; it queues no server request and changes nothing that the
// machine's hash covers (replicas with and without an observer hash equal).
func TestNotifyReachesObserverAndLeavesStateAlone(t *testing.T) {
	obs := &noteRecorder{}
	cfg := fsm.DefaultConfig()
	cfg.MaxServerRequestBytes = 16
	apps := []*noteApp{{}, {}}
	withObs, err := fsm.New(apps[0], cfg, obs)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := fsm.New(apps[1], cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := fsm.ClusterTime(1_000_000_000_000)
	ids := []fsm.SessionID{{15: 1}, {15: 2}}
	var cmds [][]byte
	for i, id := range ids {
		now = now.Add(time.Millisecond)
		cmds = append(cmds, fsm.EncodeCommand(nil, fsm.OpenSession{Time: now, ID: id, Nonce: uint64(i + 1), Timeout: time.Second}))
	}
	now = now.Add(time.Millisecond)
	cmds = append(cmds, fsm.EncodeCommand(nil, fsm.AppCommand{Time: now, Payload: []byte("change")}))
	now = now.Add(time.Millisecond)
	cmds = append(cmds, fsm.EncodeCommand(nil, fsm.AppCommand{Time: now, Payload: []byte("far too long for the limit")}))
	for _, m := range []*fsm.Machine{withObs, plain} {
		for _, c := range cmds {
			if _, err := m.Apply(append([]byte(nil), c...)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(obs.calls) != 1 || len(obs.calls[0]) != 1 {
		t.Fatalf("notes: %+v", obs.calls)
	}
	n := obs.calls[0][0]
	if n.Topic != "t" || string(n.Payload) != "change" || len(n.Sessions) != 2 || n.Sessions[0] != ids[0] || n.Sessions[1] != ids[1] {
		t.Fatalf("note %+v (the machine must copy what the application reuses)", n)
	}
	if len(apps[0].errs) != 1 || !errors.Is(apps[0].errs[0], fsm.ErrPayloadTooLarge) {
		t.Fatalf("oversized note: errors %v", apps[0].errs)
	}
	if len(obs.added) != 0 {
		t.Fatalf("a note queued server requests: %v", obs.added)
	}
	for _, id := range ids {
		if p, err := withObs.Pending(id, 0, 0); err != nil || len(p) != 0 {
			t.Fatalf("pending of %v: %v %v", id, p, err)
		}
	}
	h1, err1 := withObs.Hash()
	h2, err2 := plain.Hash()
	if err1 != nil || err2 != nil || h1 != h2 {
		t.Fatalf("hashes differ: %x %v / %x %v", h1, err1, h2, err2)
	}
}
