package test

import (
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
)

func TestCreateSessionOnLeaderAndRequest(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, _ := w.createSession()
	if created.LeaderID != l.ID() || len(created.Members) != 3 {
		t.Fatalf("SessionCreated = %+v", created)
	}
	if got := counterValue(t, w.request(1, 1, "incr")); got != 1 {
		t.Fatalf("first incr = %d", got)
	}
	if got := counterValue(t, w.request(2, 2, "incr")); got != 2 {
		t.Fatalf("second incr = %d", got)
	}
}

func TestFollowerRedirectsWithUsableHint(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	f := c.follower(t)
	w := dial(t, f.ClientAddr())
	w.send(&codec.CreateSession{Nonce: 7})
	rej, ok := w.next(kindIs(codec.KindSessionRejected, codec.KindSessionCreated)).(*codec.SessionRejected)
	if !ok {
		t.Fatal("follower created a session")
	}
	if rej.Reason != codec.CodeNotLeader || rej.Leader.ID != l.ID() || rej.Leader.ClientAddr != l.ClientAddr() || rej.Nonce != 7 {
		t.Fatalf("rejection = %+v, want NotLeader hint to %d at %s", rej, l.ID(), l.ClientAddr())
	}
	// The hint is usable: the leader at that address creates the session.
	w2 := dial(t, rej.Leader.ClientAddr)
	w2.createSession()
}

func TestContinueSessionFromNewConnectionCutsTheOld(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	old := dial(t, l.ClientAddr())
	created, secret := old.createSession()
	if got := counterValue(t, old.request(1, 1, "incr")); got != 1 {
		t.Fatalf("incr = %d", got)
	}

	w := dial(t, l.ClientAddr())
	if m, ok := w.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
		t.Fatalf("ContinueSession: %+v", m)
	}
	// The old connection is told, and its messages are refused from now on.
	closed := old.next(kindIs(codec.KindSessionClosed)).(*codec.SessionClosed)
	if closed.Reason != codec.CodeSessionMoved {
		t.Fatalf("old connection got %+v, want SessionMoved", closed)
	}
	old.send(&codec.ClientRequest{RequestID: 2, LowestPending: 2, Payload: []byte("incr")})
	if m := old.next(kindIs(codec.KindSessionClosed, codec.KindClientResponse)); m.Kind() != codec.KindSessionClosed {
		t.Fatalf("old connection's request was served: %+v", m)
	}
	// The new connection serves the session: request 1 is answered from the
	// cache, request 2 runs.
	if got := counterValue(t, w.request(1, 1, "incr")); got != 1 {
		t.Fatalf("retried request 1 = %d, want the cached 1", got)
	}
	if got := counterValue(t, w.request(2, 1, "incr")); got != 2 {
		t.Fatalf("request 2 = %d, want 2", got)
	}
}

func TestContinueSessionWithWrongSecretIsRefused(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	owner := dial(t, l.ClientAddr())
	created, secret := owner.createSession()
	secret[0] ^= 0xFF
	thief := dial(t, l.ClientAddr())
	rej, ok := thief.continueSession(created.SessionID, secret).(*codec.SessionRejected)
	if !ok || rej.Reason != codec.CodeBadSecret {
		t.Fatalf("wrong secret: %+v", rej)
	}
	// The thief's connection is not bound; the owner's still is.
	thief.send(&codec.ClientRequest{RequestID: 1, LowestPending: 1, Payload: []byte("incr")})
	if m := thief.next(kindIs(codec.KindSessionClosed, codec.KindClientResponse, codec.KindRequestError)); m.Kind() != codec.KindSessionClosed {
		t.Fatalf("unbound connection served: %+v", m)
	}
	if got := counterValue(t, owner.request(1, 1, "incr")); got != 1 {
		t.Fatalf("owner's request = %d", got)
	}
	// An unknown session id is refused too.
	rej2, ok := thief.continueSession(codec.SessionID{1, 2, 3}, secret).(*codec.SessionRejected)
	if !ok || rej2.Reason != codec.CodeSessionNotFound {
		t.Fatalf("unknown session: %+v", rej2)
	}
}

func TestKeepAliveEchoesTimestamp(t *testing.T) {
	c := startCluster(t, nil)
	w := dial(t, c.leader(t).ClientAddr())
	w.createSession()
	for _, ts := range []int64{1, 1 << 40, -5} {
		w.send(&codec.KeepAlive{Timestamp: ts})
		r := w.next(kindIs(codec.KindKeepAliveResponse)).(*codec.KeepAliveResponse)
		if r.Timestamp != ts {
			t.Fatalf("KeepAliveResponse timestamp %d, want %d", r.Timestamp, ts)
		}
	}
}

func TestSessionExpiresWithoutKeepAlivesAndCannotBeContinued(t *testing.T) {
	c := startCluster(t, nil) // session timeout 2 s
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, secret := w.createSession()
	// Another session that keeps sending keep-alives must survive.
	alive := dial(t, l.ClientAddr())
	aliveCreated, aliveSecret := alive.createSession()

	closed := make(chan *codec.SessionClosed, 1)
	go func() {
		m, err := w.nextWithin(3*waitTimeout, kindIs(codec.KindSessionClosed))
		if err == nil {
			closed <- m.(*codec.SessionClosed)
		}
		close(closed)
	}()
	deadline := time.After(3 * waitTimeout)
	var got *codec.SessionClosed
	for got == nil {
		select {
		case got = <-closed:
			if got == nil {
				t.Fatal("silent session never expired")
			}
		case <-time.After(100 * time.Millisecond):
			alive.send(&codec.KeepAlive{Timestamp: 1})
		case <-deadline:
			t.Fatal("silent session never expired")
		}
	}
	if got.Reason != codec.CodeSessionExpired {
		t.Fatalf("SessionClosed = %+v, want SessionExpired", got)
	}
	w2 := dial(t, l.ClientAddr())
	rej, ok := w2.continueSession(created.SessionID, secret).(*codec.SessionRejected)
	if !ok || rej.Reason != codec.CodeSessionExpired {
		t.Fatalf("continuing an expired session: %+v", rej)
	}
	w3 := dial(t, l.ClientAddr())
	if m, ok := w3.continueSession(aliveCreated.SessionID, aliveSecret).(*codec.SessionContinued); !ok {
		t.Fatalf("live session could not be continued: %+v", m)
	}
}

// A connection that never binds a session is closed after a session
// timeout, so idle connections cannot hold the node's connection slots; a
// bound one with keep-alives stays.
func TestUnboundConnectionIsClosedAfterSessionTimeout(t *testing.T) {
	c := startCluster(t, nil) // session timeout 2 s
	l := c.leader(t)
	idle := dial(t, l.ClientAddr())
	bound := dial(t, l.ClientAddr())
	bound.createSession()
	deadline := time.Now().Add(3 * waitTimeout)
	for {
		_, err := idle.nextWithin(100*time.Millisecond, nil)
		if err != nil && strings.Contains(err.Error(), "connection closed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle unbound connection was never closed")
		}
		bound.send(&codec.KeepAlive{Timestamp: 7})
	}
	bound.send(&codec.KeepAlive{Timestamp: 8})
	if r := bound.next(func(m codec.Message) bool {
		k, ok := m.(*codec.KeepAliveResponse)
		return ok && k.Timestamp == 8
	}); r == nil {
		t.Fatal("the bound connection stopped answering")
	}
}
