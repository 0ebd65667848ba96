package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/node"
	"github.com/zraft/zraft/supervision"
)

func transferLeadership(t *testing.T, c *cluster) *node.Node {
	t.Helper()
	n, err := tryTransferLeadership(c)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tryTransferLeadership moves leadership to a follower and returns the new
// leader. It is safe to call from any goroutine.
func tryTransferLeadership(c *cluster) (*node.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	old, err := c.WaitLeader(ctx)
	if err != nil {
		return nil, err
	}
	var target *node.Node
	for _, n := range c.Nodes() {
		if n != old {
			target = n
			break
		}
	}
	var asked time.Time
	for ctx.Err() == nil {
		// dragonboat's transfer is best effort (it is dropped when the
		// target is not caught up within an election timeout): ask again.
		if time.Since(asked) > 500*time.Millisecond {
			if err := old.TransferLeadership(target.ID()); err != nil {
				return nil, err
			}
			asked = time.Now()
		}
		// The old leader may still believe it leads for a moment; what
		// counts is that the target knows it leads.
		if id, _, ok := target.Leader(); ok && id == target.ID() {
			return target, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, fmt.Errorf("leadership did not move from %d to %d", old.ID(), target.ID())
}

func TestSessionSurvivesLeaderTransferAndRetryIsAnsweredFromCache(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, secret := w.createSession()
	if got := counterValue(t, w.request(1, 1, "incr")); got != 1 {
		t.Fatalf("incr = %d", got)
	}
	before := c.settledApplies(t)

	newLeader := transferLeadership(t, c)
	// The old leader tells its clients where to go: at once if it knows,
	// otherwise first ClusterUnavailable, then the hint once it learns it.
	closed := w.next(kindIs(codec.KindSessionClosed)).(*codec.SessionClosed)
	if closed.Reason == codec.CodeClusterUnavailable {
		closed = w.next(kindIs(codec.KindSessionClosed)).(*codec.SessionClosed)
	}
	if closed.Reason != codec.CodeNotLeader || closed.Leader.ClientAddr != newLeader.ClientAddr() {
		t.Fatalf("old leader said %+v, want NotLeader with hint %s", closed, newLeader.ClientAddr())
	}
	w2 := dial(t, closed.Leader.ClientAddr)
	if m, ok := w2.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
		t.Fatalf("continue on new leader: %+v", m)
	}
	// The retry of request 1 comes from the replicated cache: same answer,
	// and no replica ran the application again.
	if got := counterValue(t, w2.request(1, 1, "incr")); got != 1 {
		t.Fatalf("retried request = %d, want the cached 1", got)
	}
	if got := counterValue(t, w2.request(2, 2, "incr")); got != 2 {
		t.Fatalf("next request = %d, want 2", got)
	}
	// Exactly one more application call per replica: request 2's.
	if after := c.settledApplies(t); after != before+1 {
		t.Fatalf("each replica ran the application %d times since the transfer, want 1 (request 2 only)", after-before)
	}
}

func TestServerRequestsRedeliveredUntilAcknowledged(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, secret := w.createSession()
	if r, ok := w.request(1, 1, "emit:3").(*codec.ClientResponse); !ok {
		t.Fatalf("emit: %+v", r)
	}
	isServerRequest := kindIs(codec.KindServerRequest)
	var first []*codec.ServerRequest
	for len(first) < 3 {
		sr := w.next(isServerRequest).(*codec.ServerRequest)
		if len(first) > 0 && sr.RequestID <= first[len(first)-1].RequestID {
			continue // a redelivery
		}
		first = append(first, sr)
	}
	for i, sr := range first {
		if sr.RequestID != uint64(i+1) || !bytes.Equal(sr.Payload, []byte(fmt.Sprintf("work-%d", i))) {
			t.Fatalf("server request %d = %+v", i, sr)
		}
	}
	// Reconnect without acknowledging: everything is sent again.
	w.close()
	w2 := dial(t, l.ClientAddr())
	if _, ok := w2.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
		t.Fatal("continue failed")
	}
	seen := map[uint64]bool{}
	for len(seen) < 3 {
		seen[w2.next(isServerRequest).(*codec.ServerRequest).RequestID] = true
	}
	// Acknowledge up to 2: only 3 keeps coming back.
	w2.send(&codec.ServerRequestAck{RequestID: 2})
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		// Keep-alives, as a client sends them: 2 s is the session
		// timeout, and only a keep-alive is always a sign of life (other
		// messages count at most once per keep-alive interval).
		w2.send(&codec.KeepAlive{Timestamp: time.Now().UnixNano()})
		m, err := w2.nextWithin(min(200*time.Millisecond, time.Until(deadline)), isServerRequest)
		if err != nil {
			continue
		}
		// Frames already in flight before the ack may still arrive; after
		// the ack has been applied only 3 may be redelivered.
		if id := m.(*codec.ServerRequest).RequestID; id != 3 && time.Until(deadline) < time.Second {
			t.Fatalf("acknowledged request %d delivered again", id)
		}
	}
	w2.send(&codec.ServerRequestAck{RequestID: 3})
	// Once the ack is applied, a new connection gets nothing at all. It
	// dials whoever leads now: on a loaded machine leadership may move.
	waitFor(t, "acks applied", func() bool {
		w3 := dial(t, c.leader(t).ClientAddr())
		defer w3.close()
		if _, ok := w3.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
			return false
		}
		if _, err := w3.nextWithin(800*time.Millisecond, isServerRequest); err == nil {
			// Still pending: the ack may have reached a member that had
			// just lost leadership. Acknowledge again, as a client would.
			w3.send(&codec.ServerRequestAck{RequestID: 3})
			return false
		}
		return true
	})
}

func TestMalformedFrameIsAnsweredAndConnectionKeepsWorking(t *testing.T) {
	c := startCluster(t, nil)
	w := dial(t, c.leader(t).ClientAddr())
	w.createSession()
	// A ClientRequest whose payload length runs past the frame's end.
	good, _ := codec.Encode(&codec.ClientRequest{RequestID: 9, LowestPending: 9, Payload: []byte("incr")})
	bad := append([]byte(nil), good[:len(good)-2]...)
	w.sendRaw(bad)
	rerr := w.next(kindIs(codec.KindRequestError)).(*codec.RequestError)
	if rerr.RequestID != 9 || rerr.Reason != codec.CodeMalformed {
		t.Fatalf("malformed request answered with %+v", rerr)
	}
	// Noise that is not our protocol at all is dropped silently.
	w.sendRaw([]byte("GET / HTTP/1.1\r\n\r\n"))
	// The connection and the session still work.
	if got := counterValue(t, w.request(1, 1, "incr")); got != 1 {
		t.Fatalf("incr after bad frames = %d", got)
	}
}

func TestRestartingEachActorKindLosesAndDuplicatesNothing(t *testing.T) {
	faults := supervision.NewFaults()
	c := startCluster(t, nil, node.WithFaultInjection(faults))
	p := newPersistent(t, c)
	kinds := []string{"gateway", "sessions", "session", "keepalive", "raft", "dispatcher"}
	var id, count uint64
	for round, kind := range kinds {
		faults.PanicOn(kind, 1, nil)
		// Keep the stream going until the fault has fired, and for at
		// least ten requests after arming it. In the dispatcher's round
		// every third request emits a server request, so it has traffic.
		// Some kinds only see periodic work (the raft bridge proposes
		// liveness batches about every 700 ms), so the bound is time.
		roundEnd := time.Now().Add(waitTimeout)
		for i := 0; i < 10 || faults.Fired(kind) == 0; i++ {
			if time.Now().After(roundEnd) {
				break
			}
			if kind == "gateway" {
				// Well-formed frames are decoded on their connection's
				// goroutine; only bad ones reach the gateway actor.
				p.w.sendRaw([]byte{'Z', 'R', 1, byte(codec.KindClientRequest), 0xFF})
			}
			id++
			if kind == "dispatcher" && i%3 == 2 {
				if m := p.do(id, id, "emit:1"); m.Kind() != codec.KindClientResponse {
					t.Fatalf("emit during the %s round: %+v", kind, m)
				}
				continue
			}
			count++
			got := counterValue(t, p.do(id, id, "incr"))
			if got != count {
				t.Fatalf("after restarting %s (round %d): increment %d returned %d; a request was lost or ran twice", kind, round, count, got)
			}
		}
		if faults.Fired(kind) == 0 {
			t.Fatalf("no fault reached %s", kind)
		}
	}
	// Every replica agrees on the final count.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, n := range c.Nodes() {
		waitFor(t, "replica caught up", func() bool {
			res, err := n.StaleRead([]byte("get"))
			return err == nil && len(res.([]byte)) == 8 && counterFromBytes(res.([]byte)) == count
		})
	}
	_ = ctx
}

func TestLeaderThatLosesQuorumStopsServing(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	w.createSession()
	if got := counterValue(t, w.request(1, 1, "incr")); got != 1 {
		t.Fatalf("incr = %d", got)
	}
	for _, n := range c.Nodes() {
		if n != l {
			if err := c.Stop(n.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// CheckQuorum steps the lonely leader down: its client is told, and
	// nothing more is served until a quorum is back.
	closed := w.next(kindIs(codec.KindSessionClosed)).(*codec.SessionClosed)
	if closed.Reason != codec.CodeClusterUnavailable {
		t.Fatalf("client of the lonely leader got %+v, want ClusterUnavailable", closed)
	}
	w2 := dial(t, l.ClientAddr())
	w2.send(&codec.CreateSession{Nonce: 99})
	rej, ok := w2.next(kindIs(codec.KindSessionRejected, codec.KindSessionCreated)).(*codec.SessionRejected)
	if !ok || rej.Reason != codec.CodeClusterUnavailable {
		t.Fatalf("CreateSession without a quorum: %+v", rej)
	}
}

func TestSessionSurvivesRestartOfItsNode(t *testing.T) {
	c := startCluster(t, nil)
	l := c.leader(t)
	p := newPersistent(t, c)
	if got := counterValue(t, p.do(1, 1, "incr")); got != 1 {
		t.Fatalf("incr = %d", got)
	}
	if err := c.Stop(l.ID()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Start(ctx, l.ID()); err != nil {
		t.Fatal(err)
	}
	// The client continues on whoever leads now; request 1 comes from the
	// cache and request 2 runs once.
	if got := counterValue(t, p.do(1, 1, "incr")); got != 1 {
		t.Fatalf("retried request after restart = %d, want the cached 1", got)
	}
	if got := counterValue(t, p.do(2, 2, "incr")); got != 2 {
		t.Fatalf("request after restart = %d, want 2", got)
	}
	// The restarted member kept its log: it catches up to the same count.
	restarted := c.Node(l.ID())
	waitFor(t, "restarted member to catch up", func() bool {
		res, err := restarted.StaleRead([]byte("get"))
		return err == nil && counterFromBytes(res.([]byte)) == 2
	})
}

// A flapping leader must not keep a dead session alive: a new leader stamps
// cluster time, times each session from its replicated liveness by cluster
// time (plus a grace short of a full timeout) and records only sessions it
// actually heard from. Leadership moves faster than the session timeout but
// slower than the grace plus a tick (docs/protocol.md §8.2): a leader that
// has just taken over cannot tell a dead client from one still reconnecting,
// so while leaders change faster than that none of them expires anything.
func TestFlappingLeaderDoesNotKeepDeadSessionAlive(t *testing.T) {
	c := startCluster(t, nil) // session timeout 2 s, keep-alive 200 ms
	w := dial(t, c.leader(t).ClientAddr())
	created, _ := w.createSession()
	w.close() // the client dies: no more keep-alives
	id := fsm.SessionID(created.SessionID)
	deadline := time.Now().Add(4 * waitTimeout)
	for time.Now().Before(deadline) {
		// Move leadership more often than the session timeout.
		if _, err := tryTransferLeadership(c); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		_, err := c.leader(t).Read(ctx, fsm.SessionQuery{ID: id})
		cancel()
		if errors.Is(err, fsm.ErrSessionExpired) {
			return
		}
		// grace = 2 s/3 + 200 ms ≈ 0.87 s, a tick 0.1 s; timeout 2 s.
		time.Sleep(1200 * time.Millisecond)
	}
	t.Fatal("a dead session stayed alive while leadership kept moving")
}

// TestSessionRequestLostToAPanicIsAnswered: a session creation or
// continuation whose message, Raft read or proposal, or Raft answer is lost
// because the actor handling it panicked (protoactor does not deliver it
// again) is answered with a retryable rejection at once. Without an answer
// the client waits for its dial timeout (5 s, half a session timeout), and
// two such losses in a storm of panics let a session expire while its client
// was asking to continue it; here no answer at all fails the test after
// waitTimeout.
func TestSessionRequestLostToAPanicIsAnswered(t *testing.T) {
	faults := supervision.NewFaults()
	c := startCluster(t, nil, node.WithFaultInjection(faults))
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, secret := w.createSession()
	sessionRead := func(msg any) bool {
		r, ok := msg.(*actors.Read)
		if !ok {
			return false
		}
		_, ok = r.Query.(fsm.SessionQuery)
		return ok
	}
	for _, tc := range []struct {
		name, kind string
		create     bool
		match      func(msg any) bool
	}{
		{"continuation's read, in the raft bridge", "raft", false, sessionRead},
		{"continuation's answer, in the directory", "sessions", false, func(msg any) bool {
			r, ok := msg.(*actors.ReadDone)
			if !ok {
				return false
			}
			_, ok = r.Result.(fsm.SessionInfo)
			return ok
		}},
		{"ContinueSession, in the directory", "sessions", false, inboundOf[*codec.ContinueSession]},
		{"CreateSession, in the directory", "sessions", true, inboundOf[*codec.CreateSession]},
		{"creation's proposal, in the raft bridge", "raft", true, func(msg any) bool {
			p, ok := msg.(*actors.Propose)
			return ok && supervision.Kind(p.ReplyTo) == "sessions"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A directory restarted by the case before may not know the
			// leader yet (it refuses with ClusterUnavailable meanwhile).
			continueUntilBound(t, dial(t, l.ClientAddr()), created.SessionID, secret)
			nw := dial(t, l.ClientAddr())
			before := faults.Fired(tc.kind)
			faults.PanicOn(tc.kind, 1, tc.match)
			var got codec.Message
			if tc.create {
				nonce := secretSeq.Add(1)
				nw.send(&codec.CreateSession{Nonce: nonce, Secret: secret})
				got = nw.next(func(m codec.Message) bool {
					switch r := m.(type) {
					case *codec.SessionCreated:
						return r.Nonce == nonce
					case *codec.SessionRejected:
						return r.Nonce == nonce
					}
					return false
				})
			} else {
				got = nw.continueSession(created.SessionID, secret)
			}
			if faults.Fired(tc.kind) != before+1 {
				t.Fatalf("the fault did not fire (answer %+v)", got)
			}
			rej, ok := got.(*codec.SessionRejected)
			if !ok || rej.Reason != codec.CodeClusterUnavailable {
				t.Fatalf("answer to the lost request: %+v; want SessionRejected ClusterUnavailable", got)
			}
			// Asking again works: the session is intact.
			continueUntilBound(t, nw, created.SessionID, secret)
		})
	}
}

// inboundOf matches a client message of type T on its way to the session
// directory.
func inboundOf[T codec.Message](msg any) bool {
	in, ok := msg.(*actors.Inbound)
	if !ok {
		return false
	}
	_, ok = in.Msg.(T)
	return ok
}

// continueUntilBound continues the session on w, asking again while the
// answer is a retryable rejection, until it is bound or waitTimeout passes.
func continueUntilBound(t *testing.T, w *wire, id codec.SessionID, secret codec.Secret) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		m := w.continueSession(id, secret)
		if _, ok := m.(*codec.SessionContinued); ok {
			return
		}
		if r, ok := m.(*codec.SessionRejected); !ok || !r.Reason.Retryable() || time.Now().After(deadline) {
			t.Fatalf("ContinueSession: %+v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
