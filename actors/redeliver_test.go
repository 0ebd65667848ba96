package actors

import (
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

func TestRedeliveryScheduleIsPerRequest(t *testing.T) {
	const iv = time.Second
	want := []time.Duration{1, 2, 4, 8, 16, 16, 16}
	for i, w := range want {
		if got := redeliverAfter(iv, i+1); got != w*iv {
			t.Errorf("after send %d: redelivered %v later, want %v", i+1, got, w*iv)
		}
	}
	t0 := time.Unix(1000, 0)
	// A request sent 0.9 s after an older one that was already sent twice is
	// due one interval after its own send, not on the older one's tick.
	pending := []outgoing{
		{req: fsm.ServerRequest{ID: 1}, sentAt: t0, attempts: 2},
		{req: fsm.ServerRequest{ID: 2}, sentAt: t0.Add(900 * time.Millisecond), attempts: 1},
		{req: fsm.ServerRequest{ID: 3}}, // queued while unbound: sent on bind
	}
	due, ok := nextRedelivery(pending, iv)
	if !ok || !due.Equal(t0.Add(1900*time.Millisecond)) {
		t.Fatalf("next redelivery at %v, %v; want t0+1.9s", due.Sub(t0), ok)
	}
	if _, ok := nextRedelivery(pending[2:], iv); ok {
		t.Fatal("unsent work armed the redelivery timer")
	}
}

func TestLeaderHintOnlyWithNotLeaderAndShuttingDown(t *testing.T) {
	h := codec.LeaderHint{ID: 2, ClientAddr: "127.0.0.1:7001"}
	msgs := func(code codec.Code) []codec.Message {
		return []codec.Message{
			&codec.RequestError{Reason: code, Leader: h},
			&codec.QueryError{Reason: code, Leader: h},
			&codec.SessionRejected{Reason: code, Leader: h},
			&codec.SessionClosed{Reason: code, Leader: h},
		}
	}
	leaderOf := func(m codec.Message) codec.LeaderHint {
		switch r := m.(type) {
		case *codec.RequestError:
			return r.Leader
		case *codec.QueryError:
			return r.Leader
		case *codec.SessionRejected:
			return r.Leader
		case *codec.SessionClosed:
			return r.Leader
		}
		return codec.LeaderHint{}
	}
	for code := codec.Code(0); code <= codec.CodeUnsupported; code++ {
		for _, m := range msgs(code) {
			hintOnlyWhereActionable(m)
			keep := code == codec.CodeNotLeader || code == codec.CodeShuttingDown
			if got := leaderOf(m); (got == h) != keep || (!keep && got != (codec.LeaderHint{})) {
				t.Errorf("%v %v: hint %+v after the rule", m.Kind(), code, got)
			}
		}
	}
}
