package fsm_test

import (
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

func TestRemainingIsClampedToOneTimeout(t *testing.T) {
	const timeout = 10 * time.Second
	at := fsm.ClusterTime(1_000_000_000_000)
	s := fsm.SessionLiveness{Timeout: timeout, Liveness: at}
	for _, tc := range []struct {
		name  string
		clock fsm.ClusterTime
		want  time.Duration
	}{
		{"just recorded", at, timeout},
		{"partly used", at.Add(4 * time.Second), 6 * time.Second},
		{"used up", at.Add(timeout), 0},
		// An old leader ahead stamped the clock far past the record.
		{"cluster time jumped", at.Add(time.Hour), 0},
		// The record is later than the clock read with it (cannot happen
		// at one index, but the clamp holds anyway).
		{"record ahead of clock", at.Add(-time.Hour), timeout},
	} {
		if got := s.Remaining(tc.clock); got != tc.want {
			t.Errorf("%s: Remaining = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLivenessQueryReadsClockAndRecordsAtOneIndex(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(3))
	h.open(sid(1))
	h.open(sid(2))
	h.apply(fsm.RecordLiveness{Time: h.stamp(time.Second), Sessions: []fsm.SessionID{sid(1)}})
	recorded := h.now
	h.apply(fsm.CloseSession{Time: h.stamp(time.Second), Session: sid(2)})

	res, err := h.m.Lookup(fsm.LivenessQuery{})
	if err != nil {
		t.Fatal(err)
	}
	all := res.(fsm.Liveness)
	if all.Clock != h.now || len(all.Sessions) != 2 || all.Sessions[0].ID != sid(1) || all.Sessions[1].ID != sid(3) {
		t.Fatalf("all sessions: %+v (clock want %v)", all, h.now)
	}
	if s := all.Sessions[0]; s.Liveness != recorded || s.Timeout != 10*time.Second {
		t.Fatalf("session 1: %+v, want liveness %v", s, recorded)
	}
	// Listed sessions come back in the order asked, the gone ones left out.
	some := h.m.Liveness([]fsm.SessionID{sid(3), sid(2), sid(9), sid(1)})
	if len(some.Sessions) != 2 || some.Sessions[0].ID != sid(3) || some.Sessions[1].ID != sid(1) {
		t.Fatalf("listed sessions: %+v", some.Sessions)
	}
}
