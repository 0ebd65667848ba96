package fsm_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

func emitTo(id fsm.SessionID, p string) string { return "emit:" + id.String() + ":" + p }

func TestEmitsGetConsecutiveIDsPerSession(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	a, b, c := sid(1), sid(2), sid(3)
	h.open(a)
	h.open(b)
	h.open(c)
	cmd := emitTo(a, "a1") + "|" + emitTo(b, "b1") + "|" + emitTo(a, "a2") + "|" + emitTo(c, "c1") + "|" + emitTo(b, "b2")
	if o := h.appCommand(cmd); o.Status != fsm.StatusOK {
		t.Fatal(o.Status)
	}
	h.appCommand(emitTo(a, "a3"))
	for id, want := range map[fsm.SessionID][]uint64{a: {1, 2, 3}, b: {1, 2}, c: {1}} {
		if got := h.pendingIDs(id); !slices.Equal(got, want) {
			t.Fatalf("session %v pending %v, want %v", id, got, want)
		}
	}
	// The observer saw each addition, in emit order, with the cluster time.
	want := []struct {
		s  fsm.SessionID
		id uint64
		p  string
	}{{a, 1, "a1"}, {b, 1, "b1"}, {a, 2, "a2"}, {c, 1, "c1"}, {b, 2, "b2"}, {a, 3, "a3"}}
	if len(h.obs.added) != len(want) {
		t.Fatalf("observer saw %d additions", len(h.obs.added))
	}
	for i, w := range want {
		got := h.obs.added[i]
		if got.session != w.s || got.req.ID != w.id || string(got.req.Payload) != w.p || got.req.CreatedAt == 0 {
			t.Fatalf("addition %d = %+v, want %+v", i, got, w)
		}
	}
}

func TestCumulativeAcks(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	a, b := sid(1), sid(2)
	h.open(a)
	h.open(b)
	for i := 0; i < 7; i++ {
		h.appCommand(emitTo(a, "x") + "|" + emitTo(b, "y"))
	}
	// One command acknowledges for several sessions; an ack for a gone
	// session is skipped.
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: a, UpTo: 5}, {Session: sid(9), UpTo: 3}, {Session: b, UpTo: 2}}})
	if got := h.pendingIDs(a); !slices.Equal(got, []uint64{6, 7}) {
		t.Fatalf("a pending %v", got)
	}
	if got := h.pendingIDs(b); !slices.Equal(got, []uint64{3, 4, 5, 6, 7}) {
		t.Fatalf("b pending %v", got)
	}
	// An older ack is a no-op; an ack past the end clears everything.
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: a, UpTo: 3}, {Session: b, UpTo: 100}}})
	if got := h.pendingIDs(a); !slices.Equal(got, []uint64{6, 7}) {
		t.Fatalf("a pending %v after old ack", got)
	}
	if got := h.pendingIDs(b); len(got) != 0 {
		t.Fatalf("b pending %v after full ack", got)
	}
	// Ids keep counting after acknowledgements.
	h.appCommand(emitTo(b, "z"))
	if got := h.pendingIDs(b); !slices.Equal(got, []uint64{8}) {
		t.Fatalf("b pending %v after new emit", got)
	}
	if st := h.m.Stats(); st.PendingServerRequests != 3 {
		t.Fatalf("pending total %d", st.PendingServerRequests)
	}
}

func TestEmitLimits(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxPendingServerRequests = 2
	cfg.MaxServerRequestBytes = 4
	cfg.MaxUnassigned = 1
	h := newHarness(t, cfg)
	h.open(sid(1))
	h.appCommand(emitTo(sid(1), "a") + "|" + emitTo(sid(1), "b") + "|" + emitTo(sid(1), "c"))
	h.appCommand(emitTo(sid(1), "toolong") + "|" + emitTo(sid(7), "x"))
	h.appCommand("cap:role=worker:j1|cap:role=worker:j2")
	wantErrs := []error{fsm.ErrQueueFull, fsm.ErrPayloadTooLarge, fsm.ErrSessionNotFound, fsm.ErrQueueFull}
	if len(h.app.emitErrs) != len(wantErrs) {
		t.Fatalf("emit errors %v", h.app.emitErrs)
	}
	for i, w := range wantErrs {
		if !errors.Is(h.app.emitErrs[i], w) {
			t.Fatalf("emit error %d = %v, want %v", i, h.app.emitErrs[i], w)
		}
	}
	if got := h.pendingIDs(sid(1)); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("pending %v", got)
	}
	if st := h.m.Stats(); st.Unassigned != 1 {
		t.Fatalf("unassigned %d, want 1", st.Unassigned)
	}
}

func TestSelectorPicksFewestPendingThenSmallestID(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(3), worker())
	h.open(sid(2), worker())
	h.open(sid(1)) // not capable
	h.appCommand("cap:role=worker:j1")
	h.appCommand("cap:role=worker:j2")
	h.appCommand("cap:role=worker:j3")
	if got := h.pendingIDs(sid(2)); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("session 2 pending %v", got)
	}
	if got := h.pendingIDs(sid(3)); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("session 3 pending %v", got)
	}
	if got := h.pendingIDs(sid(1)); len(got) != 0 {
		t.Fatalf("incapable session got work %v", got)
	}
}

func TestSelectorWorkMovesWhenSessionGoes(t *testing.T) {
	for _, reason := range []fsm.RemoveReason{fsm.RemovedExpired, fsm.RemovedClosed} {
		t.Run(reason.String(), func(t *testing.T) {
			h := newHarness(t, fsm.DefaultConfig())
			a, b := sid(1), sid(2)
			h.open(a, worker())
			h.open(b, worker())
			h.appCommand("cap:role=worker:job1") // to a (tie, smaller id)
			h.appCommand(emitTo(a, "direct"))    // a's own work
			h.appCommand("cap:role=worker:job2") // to b (fewer pending)
			if got := h.pendingIDs(a); !slices.Equal(got, []uint64{1, 2}) {
				t.Fatalf("a pending %v", got)
			}
			h.obs.added = nil

			if reason == fsm.RemovedExpired {
				info, _ := h.m.Session(a)
				h.apply(fsm.RecordLiveness{Time: h.stamp(0), Sessions: []fsm.SessionID{b}})
				if o := h.apply(fsm.ExpireSession{Time: h.stamp(20 * time.Second), Session: a, LivenessStamp: info.Liveness}); o.Status != fsm.StatusOK {
					t.Fatal(o.Status)
				}
			} else {
				h.apply(fsm.CloseSession{Time: h.stamp(0), Session: a})
			}

			reqs, err := h.m.Pending(b, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(reqs) != 2 || reqs[1].ID != 2 || string(reqs[1].Payload) != "job1" {
				t.Fatalf("b pending %+v, want job1 moved as id 2", reqs)
			}
			if len(h.obs.added) != 1 || h.obs.added[0].session != b || h.obs.added[0].req.ID != 2 {
				t.Fatalf("observer additions %+v", h.obs.added)
			}
			if len(h.app.closed) != 1 || len(h.app.closed[0].dropped) != 1 ||
				string(h.app.closed[0].dropped[0].Payload) != "direct" || h.app.closed[0].reason != reason {
				t.Fatalf("application close %+v", h.app.closed)
			}
			if len(h.obs.removed) != 1 || h.obs.removed[0].reason != reason {
				t.Fatalf("observer removals %+v", h.obs.removed)
			}
		})
	}
}

func TestUnassignedWorkWaitsForCapableSession(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxPendingServerRequests = 2
	h := newHarness(t, cfg)
	h.appCommand("cap:role=worker:j1|cap:role=worker:j2|cap:role=worker:j3")
	if st := h.m.Stats(); st.Unassigned != 3 || st.PendingServerRequests != 0 {
		t.Fatalf("stats %+v", st)
	}
	h.open(sid(1), worker())
	reqs, _ := h.m.Pending(sid(1), 0, 0)
	if len(reqs) != 2 || string(reqs[0].Payload) != "j1" || string(reqs[1].Payload) != "j2" {
		t.Fatalf("pending %+v", reqs)
	}
	if st := h.m.Stats(); st.Unassigned != 1 {
		t.Fatalf("unassigned %d", st.Unassigned)
	}
	// An acknowledgement frees room and the rest is assigned.
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: sid(1), UpTo: 1}}})
	reqs, _ = h.m.Pending(sid(1), 0, 0)
	if len(reqs) != 2 || reqs[1].ID != 3 || string(reqs[1].Payload) != "j3" {
		t.Fatalf("pending after ack %+v", reqs)
	}
	if st := h.m.Stats(); st.Unassigned != 0 {
		t.Fatalf("unassigned %d", st.Unassigned)
	}
}

func TestMovedWorkThatFitsNowhereIsReported(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxUnassigned = 1
	h := newHarness(t, cfg)
	h.open(sid(1), worker())
	h.appCommand("cap:role=worker:j1|cap:role=worker:j2")
	h.apply(fsm.CloseSession{Time: h.stamp(0), Session: sid(1)})
	if st := h.m.Stats(); st.Unassigned != 1 {
		t.Fatalf("unassigned %d", st.Unassigned)
	}
	if len(h.app.closed) != 1 || len(h.app.closed[0].dropped) != 1 || string(h.app.closed[0].dropped[0].Payload) != "j2" {
		t.Fatalf("dropped %+v", h.app.closed)
	}
}
