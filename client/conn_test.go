package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/transport"
)

func TestDialCreatesSessionAndLearnsMembers(t *testing.T) {
	srv := newFakeServer(t)
	srv.members = []codec.Member{{ID: 1, ClientAddr: srv.addr()}, {ID: 2, ClientAddr: "127.0.0.1:1"}}
	events := make(chan Event, 16)
	c := dialT(t, []string{srv.addr()},
		WithCapabilities(map[string]string{"watch": "1", "archive": "yes"}),
		WithEvents(events))

	_, m := srv.next(t, codec.KindCreateSession)
	cs := m.(*codec.CreateSession)
	if cs.Secret == (codec.Secret{}) {
		t.Error("CreateSession carries an all-zero secret")
	}
	if len(cs.Capabilities) != 2 || cs.Capabilities[0].Name != "archive" || cs.Capabilities[1] != (codec.Capability{Name: "watch", Value: "1"}) {
		t.Errorf("capabilities = %v, want sorted archive, watch", cs.Capabilities)
	}
	if c.SessionID() != srv.sid {
		t.Errorf("SessionID = %x, want %x", c.SessionID(), srv.sid)
	}
	if got := c.Members(); len(got) != 2 || got[1].ClientAddr != "127.0.0.1:1" {
		t.Errorf("Members = %v", got)
	}
	if c.State() != StateConnected {
		t.Errorf("State = %v", c.State())
	}
	if ev := waitEvent(t, events, EventConnected); ev.Endpoint != srv.addr() {
		t.Errorf("connected event endpoint %q, want %q", ev.Endpoint, srv.addr())
	}
	res, err := c.Submit(context.Background(), []byte("hello"))
	if err != nil || string(res) != "hello" {
		t.Fatalf("Submit = %q, %v", res, err)
	}
	res, err = c.Query(context.Background(), []byte("q"))
	if err != nil || string(res) != "q" {
		t.Fatalf("Query = %q, %v", res, err)
	}
	_, m = srv.next(t, codec.KindQuery)
	if q := m.(*codec.Query); q.Consistency != codec.Linearizable {
		t.Errorf("default query consistency %v, want Linearizable", q.Consistency)
	}
}

func TestDialRejectedByApplication(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(func(_ *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
		if cs, ok := m.(*codec.CreateSession); ok {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeRejected, Message: "no"}}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := Dial(ctx, []string{srv.addr()}, testOptions()...)
	if !errors.Is(err, ErrRejected) || c != nil {
		t.Fatalf("Dial = %v, %v; want ErrRejected", c, err)
	}
}

func TestDialEndsWithContext(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(mute)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, []string{srv.addr()}, testOptions(WithDialTimeout(50*time.Millisecond))...)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v, want DeadlineExceeded", err)
	}
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("Dial error %v does not carry the last attempt's timeout", err)
	}
}

func TestDialFollowsLeaderHint(t *testing.T) {
	leader := newFakeServer(t)
	follower := newFakeServer(t)
	follower.setRespond(func(_ *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
		if cs, ok := m.(*codec.CreateSession); ok {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeNotLeader,
				Leader: codec.LeaderHint{ID: 2, ClientAddr: leader.addr()}}}
		}
		return nil
	})
	c := dialT(t, []string{follower.addr()})
	_, m1 := follower.next(t, codec.KindCreateSession)
	_, m2 := leader.next(t, codec.KindCreateSession)
	a, b := m1.(*codec.CreateSession), m2.(*codec.CreateSession)
	// The same nonce and secret make creation idempotent across retries.
	if a.Nonce != b.Nonce || a.Secret != b.Secret {
		t.Error("redirected CreateSession changed nonce or secret")
	}
	if res, err := c.Submit(context.Background(), []byte("x")); err != nil || string(res) != "x" {
		t.Fatalf("Submit after redirect = %q, %v", res, err)
	}
}

func TestDialRotatesWithoutHint(t *testing.T) {
	noLeader := newFakeServer(t)
	unavailable := newFakeServer(t)
	good := newFakeServer(t)
	reject := func(code codec.Code) responder {
		return func(_ *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
			if cs, ok := m.(*codec.CreateSession); ok {
				return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: code}}
			}
			return nil
		}
	}
	noLeader.setRespond(reject(codec.CodeNotLeader)) // leader unknown: empty hint
	unavailable.setRespond(reject(codec.CodeClusterUnavailable))
	dialT(t, []string{noLeader.addr(), unavailable.addr(), good.addr()})
	noLeader.next(t, codec.KindCreateSession)
	unavailable.next(t, codec.KindCreateSession)
	good.next(t, codec.KindCreateSession)
}

// heldMsg is a message a responder kept back for the test to answer.
type heldMsg struct {
	id  transport.ConnID
	msg codec.Message
}

// holdKind returns a responder that behaves like sessionOnly except that
// messages of kind k are passed to held instead of being answered.
func holdKind(k codec.Kind, held chan<- heldMsg) responder {
	return func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		if m.Kind() == k {
			held <- heldMsg{id: id, msg: m}
			return nil
		}
		return sessionOnly(s, id, m)
	}
}

func recvHeld(t *testing.T, held <-chan heldMsg) heldMsg {
	t.Helper()
	select {
	case h := <-held:
		return h
	case <-time.After(waitLimit):
		t.Fatalf("nothing held within %v", waitLimit)
		return heldMsg{}
	}
}

func TestRequestsQueueWhileReconnectingAndResendWithSameIDs(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	events := make(chan Event, 64)
	c := dialT(t, []string{srv.addr()}, WithEvents(events))
	first := c.Go([]byte("a"))
	id, m := srv.next(t, codec.KindClientRequest)
	if r := m.(*codec.ClientRequest); r.RequestID != 1 || r.LowestPending != 1 {
		t.Fatalf("first request id %d lowest %d, want 1, 1", r.RequestID, r.LowestPending)
	}

	// Drop the connection and hold the continuation back, so that the
	// client stays disconnected while more calls are made.
	held := make(chan heldMsg, 4)
	srv.setRespond(holdKind(codec.KindContinueSession, held))
	if err := srv.router.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, EventReconnecting)
	h := recvHeld(t, held)
	cont := h.msg.(*codec.ContinueSession)
	if cont.SessionID != srv.sid {
		t.Errorf("ContinueSession for %x, want %x", cont.SessionID, srv.sid)
	}
	second, third := c.Go([]byte("b")), c.Go([]byte("c"))
	if c.State() != StateReconnecting {
		t.Errorf("State = %v while the continuation is unanswered", c.State())
	}
	srv.setRespond(sessionOnly)
	srv.send(h.id, &codec.SessionContinued{Nonce: cont.Nonce})
	waitEvent(t, events, EventConnected)

	// Everything pending is resent in id order with its original id: the
	// queued calls were not sent before the session was bound again.
	for want, payload := range []string{"a", "b", "c"} {
		_, m := srv.next(t, codec.KindClientRequest)
		r := m.(*codec.ClientRequest)
		if r.RequestID != uint64(want+1) || string(r.Payload) != payload || r.LowestPending != 1 {
			t.Fatalf("request %d %q lowest %d; want %d %q lowest 1", r.RequestID, r.Payload, r.LowestPending, want+1, payload)
		}
		srv.send(h.id, &codec.ClientResponse{RequestID: r.RequestID, Result: []byte("ok-" + payload)})
	}
	for _, cl := range []*Call{first, second, third} {
		waitCall(t, cl)
		if cl.Error != nil || string(cl.Result) != "ok-"+string(cl.Payload) {
			t.Errorf("call %q = %q, %v", cl.Payload, cl.Result, cl.Error)
		}
	}
}

func TestLowestPendingOnTheWire(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()})
	next := func(payload string) (transport.ConnID, *codec.ClientRequest, *Call) {
		cl := c.Go([]byte(payload))
		id, m := srv.next(t, codec.KindClientRequest)
		return id, m.(*codec.ClientRequest), cl
	}
	answer := func(id transport.ConnID, r *codec.ClientRequest, cl *Call) {
		srv.send(id, &codec.ClientResponse{RequestID: r.RequestID, Result: r.Payload})
		if waitCall(t, cl).Error != nil {
			t.Fatalf("call %d: %v", r.RequestID, cl.Error)
		}
	}
	id, r1, c1 := next("1")
	_, r2, c2 := next("2")
	_, r3, c3 := next("3")
	for _, r := range []*codec.ClientRequest{r1, r2, r3} {
		if r.LowestPending != 1 {
			t.Errorf("request %d lowest pending %d, want 1", r.RequestID, r.LowestPending)
		}
	}
	answer(id, r1, c1)
	answer(id, r3, c3)
	_, r4, c4 := next("4")
	if r4.RequestID != 4 || r4.LowestPending != 2 {
		t.Errorf("request %d lowest pending %d, want 4, 2", r4.RequestID, r4.LowestPending)
	}
	answer(id, r2, c2)
	answer(id, r4, c4)
	_, r5, _ := next("5")
	if r5.LowestPending != 5 {
		t.Errorf("request 5 lowest pending %d, want 5", r5.LowestPending)
	}
}

func TestNotLeaderMovesSessionToHintedLeader(t *testing.T) {
	old := newFakeServer(t)
	newLeader := newFakeServer(t)
	old.setRespond(sessionOnly)
	c := dialT(t, []string{old.addr()})
	_, create := old.next(t, codec.KindCreateSession)
	cl := c.Go([]byte("cmd"))
	id, m := old.next(t, codec.KindClientRequest)
	r := m.(*codec.ClientRequest)
	old.send(id, &codec.RequestError{RequestID: r.RequestID, Reason: codec.CodeNotLeader,
		Leader: codec.LeaderHint{ID: 2, ClientAddr: newLeader.addr()}})

	_, cm := newLeader.next(t, codec.KindContinueSession)
	cont := cm.(*codec.ContinueSession)
	if cont.Secret != create.(*codec.CreateSession).Secret || cont.SessionID != old.sid {
		t.Error("continuation does not present the session's id and secret")
	}
	_, m = newLeader.next(t, codec.KindClientRequest)
	if r2 := m.(*codec.ClientRequest); r2.RequestID != r.RequestID {
		t.Errorf("resent request id %d, want %d", r2.RequestID, r.RequestID)
	}
	if waitCall(t, cl).Error != nil || string(cl.Result) != "cmd" {
		t.Errorf("call = %q, %v", cl.Result, cl.Error)
	}
}

func TestDeadServerDetectedAndSessionContinuedElsewhere(t *testing.T) {
	a := newFakeServer(t)
	b := newFakeServer(t)
	a.members = []codec.Member{{ID: 1, ClientAddr: a.addr()}, {ID: 2, ClientAddr: b.addr()}}
	events := make(chan Event, 64)
	// Only a is given: b is learned from the member list.
	c := dialT(t, []string{a.addr()}, WithKeepAliveMisses(2), WithEvents(events))
	_, m := a.next(t, codec.KindCreateSession)
	secret := m.(*codec.CreateSession).Secret
	waitEvent(t, events, EventConnected)
	a.next(t, codec.KindKeepAlive) // keep-alives flow while a answers

	a.setRespond(mute)
	ev := waitEvent(t, events, EventReconnecting)
	if ev.Endpoint != a.addr() || !errors.Is(ev.Err, ErrTimeout) {
		t.Errorf("reconnecting event %v, want %s with a timeout", ev, a.addr())
	}
	_, m = b.next(t, codec.KindContinueSession)
	cont := m.(*codec.ContinueSession)
	if cont.Secret != secret || cont.SessionID != a.sid {
		t.Error("continuation on b does not carry the same session id and secret")
	}
	if ev := waitEvent(t, events, EventConnected); ev.Endpoint != b.addr() {
		t.Errorf("connected to %q, want %q", ev.Endpoint, b.addr())
	}
	if res, err := c.Submit(context.Background(), []byte("after")); err != nil || string(res) != "after" {
		t.Errorf("Submit on b = %q, %v", res, err)
	}
}

func TestSessionExpiredOnContinuationFailsPending(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	events := make(chan Event, 64)
	c := dialT(t, []string{srv.addr()}, WithEvents(events))
	cl := c.Go([]byte("lost"))
	id, _ := srv.next(t, codec.KindClientRequest)
	srv.setRespond(func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		if cs, ok := m.(*codec.ContinueSession); ok {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeSessionExpired}}
		}
		return sessionOnly(s, id, m)
	})
	_ = srv.router.CloseConn(id)
	ev := waitEvent(t, events, EventSessionLost)
	if !errors.Is(ev.Err, ErrSessionExpired) {
		t.Errorf("session lost event error %v", ev.Err)
	}
	if err := waitCall(t, cl).Error; !errors.Is(err, ErrSessionExpired) {
		t.Errorf("pending call error %v, want ErrSessionExpired", err)
	}
	if _, err := c.Submit(context.Background(), []byte("x")); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("Submit after loss = %v, want ErrSessionExpired", err)
	}
	if c.State() != StateSessionLost {
		t.Errorf("State = %v", c.State())
	}
}

func TestServerRequestDuplicateReacknowledgedNotRedelivered(t *testing.T) {
	srv := newFakeServer(t)
	delivered := make(chan ServerRequest, 8)
	dialT(t, []string{srv.addr()}, WithServerRequests(delivered))
	id, _ := srv.next(t, codec.KindCreateSession)
	created := time.Unix(0, 12345)
	srv.send(id, &codec.ServerRequest{RequestID: 1, CreatedAt: created.UnixNano(), Payload: []byte("one")})
	_, m := srv.next(t, codec.KindServerRequestAck)
	if ack := m.(*codec.ServerRequestAck); ack.RequestID != 1 {
		t.Fatalf("ack %d, want 1", ack.RequestID)
	}
	srv.send(id, &codec.ServerRequest{RequestID: 1, CreatedAt: created.UnixNano(), Payload: []byte("one")})
	_, m = srv.next(t, codec.KindServerRequestAck)
	if ack := m.(*codec.ServerRequestAck); ack.RequestID != 1 {
		t.Fatalf("re-sent ack %d, want 1", ack.RequestID)
	}
	srv.send(id, &codec.ServerRequest{RequestID: 2, Payload: []byte("two")})
	for _, want := range []string{"one", "two"} {
		select {
		case r := <-delivered:
			if string(r.Payload) != want {
				t.Fatalf("delivered %d %q, want %q (a duplicate was delivered twice?)", r.ID, r.Payload, want)
			}
			if r.ID == 1 && !r.CreatedAt.Equal(created) {
				t.Errorf("CreatedAt = %v, want %v", r.CreatedAt, created)
			}
		case <-time.After(waitLimit):
			t.Fatalf("%q not delivered", want)
		}
	}
}

func TestServerRequestsOutOfOrderDeliveredInOrder(t *testing.T) {
	srv := newFakeServer(t)
	got := make(chan uint64, 8)
	dialT(t, []string{srv.addr()}, WithServerRequestHandler(func(r ServerRequest) { got <- r.ID }))
	id, _ := srv.next(t, codec.KindCreateSession)
	for _, n := range []uint64{3, 2, 1} {
		srv.send(id, &codec.ServerRequest{RequestID: n, Payload: []byte{byte(n)}})
	}
	// Acknowledgements are cumulative, so none may be sent before id 1
	// arrived: the first one covers all three.
	_, m := srv.next(t, codec.KindServerRequestAck)
	if ack := m.(*codec.ServerRequestAck); ack.RequestID != 3 {
		t.Fatalf("first ack %d, want 3", ack.RequestID)
	}
	for want := uint64(1); want <= 3; want++ {
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("delivered %d, want %d", n, want)
			}
		case <-time.After(waitLimit):
			t.Fatalf("%d not delivered", want)
		}
	}
	// Keep-alives report the acknowledged id too.
	for {
		_, m := srv.next(t, codec.KindKeepAlive)
		if m.(*codec.KeepAlive).AckedUpTo == 3 {
			break
		}
	}
}

func TestBreakerSkipsDeadEndpoint(t *testing.T) {
	hole := newFakeServer(t) // accepts connections, never answers
	hole.setRespond(mute)
	live := newFakeServer(t)
	events := make(chan Event, 64)
	c := dialT(t, []string{hole.addr(), live.addr()},
		WithBreaker(2, time.Hour), WithDialTimeout(time.Second), WithEvents(events))
	waitEvent(t, events, EventConnected)
	id, _ := live.next(t, codec.KindCreateSession)

	// Losing live makes the rotation try hole a second time, which trips
	// hole's breaker; the session then continues on live.
	_ = live.router.CloseConn(id)
	if ev := waitEvent(t, events, EventBreakerOpened); ev.Endpoint != hole.addr() {
		t.Fatalf("breaker opened for %q, want %q", ev.Endpoint, hole.addr())
	}
	if ev := waitEvent(t, events, EventConnected); ev.Endpoint != live.addr() {
		t.Fatalf("reconnected to %q", ev.Endpoint)
	}
	if n := hole.opened.Load(); n != 2 {
		t.Fatalf("dead endpoint contacted %d times, want 2", n)
	}

	// Next time, rotation reaches hole again, but its open breaker makes
	// the client skip it without a connection attempt.
	id, _ = live.next(t, codec.KindContinueSession)
	_ = live.router.CloseConn(id)
	waitEvent(t, events, EventReconnecting)
	if ev := waitEvent(t, events, EventConnected); ev.Endpoint != live.addr() {
		t.Fatalf("reconnected to %q", ev.Endpoint)
	}
	if n := hole.opened.Load(); n != 2 {
		t.Errorf("dead endpoint with an open breaker contacted again (%d connections)", n)
	}
	if _, err := c.Submit(context.Background(), []byte("x")); err != nil {
		t.Errorf("Submit: %v", err)
	}
}

func TestBreakerIgnoresNotLeader(t *testing.T) {
	follower := newFakeServer(t)
	leader := newFakeServer(t)
	follower.setRespond(func(_ *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
		if cs, ok := m.(*codec.CreateSession); ok {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeNotLeader,
				Leader: codec.LeaderHint{ID: 2, ClientAddr: leader.addr()}}}
		}
		return nil
	})
	events := make(chan Event, 64)
	dialT(t, []string{follower.addr(), leader.addr()}, WithBreaker(1, time.Hour), WithEvents(events))
	waitEvent(t, events, EventConnected)
	for {
		select {
		case ev := <-events:
			if ev.Type == EventBreakerOpened {
				t.Fatalf("breaker opened for %s after a NotLeader answer", ev.Endpoint)
			}
			continue
		default:
		}
		break
	}
}

func TestCloseFailsPendingWithErrClosed(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()})
	a, b := c.Go([]byte("a")), c.Go([]byte("b"))
	srv.next(t, codec.KindClientRequest)
	srv.next(t, codec.KindClientRequest)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*Call{a, b} {
		if err := waitCall(t, cl).Error; !errors.Is(err, ErrClosed) {
			t.Errorf("pending call error %v, want ErrClosed", err)
		}
	}
	_, m := srv.next(t, codec.KindCloseSession)
	if cs := m.(*codec.CloseSession); cs.Reason != codec.CodeClientClosed {
		t.Errorf("CloseSession reason %v", cs.Reason)
	}
	if _, err := c.Submit(context.Background(), []byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close = %v", err)
	}
	if err := waitCall(t, c.Go(nil)).Error; !errors.Is(err, ErrClosed) {
		t.Errorf("Go after Close = %v", err)
	}
	if c.State() != StateClosed {
		t.Errorf("State = %v", c.State())
	}
}

func TestLateAndDuplicateResponsesIgnored(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()})
	first := c.Go([]byte("1"))
	id, _ := srv.next(t, codec.KindClientRequest)
	srv.send(id, &codec.ClientResponse{RequestID: 1, Result: []byte("r1")})
	if waitCall(t, first).Error != nil || string(first.Result) != "r1" {
		t.Fatalf("first = %q, %v", first.Result, first.Error)
	}
	second := c.Go([]byte("2"))
	srv.next(t, codec.KindClientRequest)
	srv.send(id, &codec.ClientResponse{RequestID: 1, Result: []byte("late")})
	srv.send(id, &codec.RequestError{RequestID: 1, Reason: codec.CodeInternal})
	srv.send(id, &codec.ClientResponse{RequestID: 99, Result: []byte("unknown")})
	srv.send(id, &codec.QueryResponse{CorrelationID: 7, Result: []byte("unknown")})
	srv.send(id, &codec.ClientResponse{RequestID: 2, Result: []byte("r2")})
	if waitCall(t, second).Error != nil || string(second.Result) != "r2" {
		t.Fatalf("second = %q, %v", second.Result, second.Error)
	}
	if string(first.Result) != "r1" || first.Error != nil {
		t.Errorf("a late answer changed the first call: %q, %v", first.Result, first.Error)
	}
}

func TestMaxAttemptsGivesOutcomeUnknown(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()},
		WithRequestTimeout(30*time.Millisecond), WithMaxAttempts(3), WithBreaker(100, time.Hour))
	cl := c.Go([]byte("x"))
	for i := 0; i < 3; i++ {
		_, m := srv.next(t, codec.KindClientRequest)
		if r := m.(*codec.ClientRequest); r.RequestID != 1 {
			t.Fatalf("attempt %d carries id %d, want 1", i+1, r.RequestID)
		}
	}
	err := waitCall(t, cl).Error
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("error %v, want ErrOutcomeUnknown and ErrTimeout", err)
	}
}

func TestRetriedServerErrorsResendSameID(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()})
	cl := c.Go([]byte("x"))
	for _, code := range []codec.Code{codec.CodeOverloaded, codec.CodeOutcomeUnknown, codec.CodeClusterUnavailable} {
		id, m := srv.next(t, codec.KindClientRequest)
		srv.send(id, &codec.RequestError{RequestID: m.(*codec.ClientRequest).RequestID, Reason: code})
	}
	id, m := srv.next(t, codec.KindClientRequest)
	if r := m.(*codec.ClientRequest); r.RequestID != 1 {
		t.Fatalf("retry carries id %d", r.RequestID)
	}
	srv.send(id, &codec.ClientResponse{RequestID: 1, Result: []byte("done")})
	if waitCall(t, cl).Error != nil || string(cl.Result) != "done" {
		t.Errorf("call = %q, %v", cl.Result, cl.Error)
	}
}

func TestOverloadedUntilAttemptsRunOut(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		if r, ok := m.(*codec.ClientRequest); ok {
			return []codec.Message{&codec.RequestError{RequestID: r.RequestID, Reason: codec.CodeOverloaded}}
		}
		return sessionOnly(s, id, m)
	})
	c := dialT(t, []string{srv.addr()}, WithMaxAttempts(2))
	_, err := c.Submit(context.Background(), []byte("x"))
	// Every attempt was refused before execution, so the outcome is known:
	// the command did not run.
	if !errors.Is(err, ErrOverloaded) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("error %v, want ErrOverloaded without ErrOutcomeUnknown", err)
	}
}

func TestErrorsMappedFromServer(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		switch m := m.(type) {
		case *codec.ClientRequest:
			switch string(m.Payload) {
			case "app":
				return []codec.Message{&codec.RequestError{RequestID: m.RequestID, Reason: codec.CodeApplication, AppCode: 42, Message: "no such key"}}
			case "evicted":
				return []codec.Message{&codec.RequestError{RequestID: m.RequestID, Reason: codec.CodeResponseEvicted}}
			}
		case *codec.Query:
			if m.Consistency == codec.Stale {
				return []codec.Message{&codec.QueryError{CorrelationID: m.CorrelationID, Reason: codec.CodeUnsupported, Message: "no stale reads"}}
			}
			return []codec.Message{&codec.QueryError{CorrelationID: m.CorrelationID, Reason: codec.CodeApplication, AppCode: 7}}
		}
		return sessionOnly(s, id, m)
	})
	c := dialT(t, []string{srv.addr()})
	ctx := context.Background()

	_, err := c.Submit(ctx, []byte("app"))
	var app *AppError
	if !errors.As(err, &app) || app.Code != 42 || app.Message != "no such key" || !errors.Is(err, ErrApplication) {
		t.Errorf("application error = %#v", err)
	}
	if _, err := c.Submit(ctx, []byte("evicted")); !errors.Is(err, ErrResponseEvicted) {
		t.Errorf("evicted = %v", err)
	}
	if _, err := c.Query(ctx, []byte("q"), AllowStale()); !errors.Is(err, ErrUnsupported) {
		t.Errorf("stale query = %v, want ErrUnsupported", err)
	}
	if _, err := c.Query(ctx, []byte("q")); !errors.As(err, &app) || app.Code != 7 {
		t.Errorf("query application error = %v", err)
	}
	big := make([]byte, codec.DefaultLimits().MaxPayload+1)
	if _, err := c.Submit(ctx, big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized payload = %v, want ErrTooLarge", err)
	}
}

func TestMaxPendingGivesOverloaded(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()}, WithMaxPending(2))
	c.Go([]byte("a"))
	c.Go([]byte("b"))
	third := waitCall(t, c.Go([]byte("c")))
	if !errors.Is(third.Error, ErrOverloaded) || errors.Is(third.Error, ErrOutcomeUnknown) {
		t.Errorf("third call = %v, want ErrOverloaded", third.Error)
	}
}

func TestSubmitCancelledBeforeSendIsWithdrawn(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	events := make(chan Event, 64)
	c := dialT(t, []string{srv.addr()}, WithEvents(events))
	id, _ := srv.next(t, codec.KindCreateSession)
	held := make(chan heldMsg, 4)
	srv.setRespond(holdKind(codec.KindContinueSession, held))
	_ = srv.router.CloseConn(id)
	waitEvent(t, events, EventReconnecting)
	h := recvHeld(t, held)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Submit(ctx, []byte("withdrawn"))
		errc <- err
	}()
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Submit = %v, want context.Canceled without ErrOutcomeUnknown", err)
	}
	srv.setRespond(sessionOnly)
	srv.send(h.id, &codec.SessionContinued{Nonce: h.msg.(*codec.ContinueSession).Nonce})
	waitEvent(t, events, EventConnected)
	c.Go([]byte("kept"))
	// The withdrawn command never reached the server: the first request it
	// sees is the next one.
	_, m := srv.next(t, codec.KindClientRequest)
	r := m.(*codec.ClientRequest)
	if string(r.Payload) == "withdrawn" {
		t.Fatal("a withdrawn command was sent")
	}
	if string(r.Payload) != "kept" || r.LowestPending != r.RequestID {
		t.Errorf("request %d %q lowest %d", r.RequestID, r.Payload, r.LowestPending)
	}
}

func TestSubmitCancelledAfterSendStaysPending(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Submit(ctx, []byte("maybe"))
		errc <- err
	}()
	id, m := srv.next(t, codec.KindClientRequest)
	cancelled := m.(*codec.ClientRequest)
	cancel()
	err := <-errc
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit = %v, want ErrOutcomeUnknown and context.Canceled", err)
	}
	// The cancelled id still holds the watermark down, so the server keeps
	// its cached response.
	next := c.Go([]byte("next"))
	_, m = srv.next(t, codec.KindClientRequest)
	if r := m.(*codec.ClientRequest); r.LowestPending != cancelled.RequestID {
		t.Errorf("lowest pending %d, want the cancelled id %d", r.LowestPending, cancelled.RequestID)
	}
	srv.send(id, &codec.ClientResponse{RequestID: cancelled.RequestID})
	srv.send(id, &codec.ClientResponse{RequestID: cancelled.RequestID + 1})
	waitCall(t, next)
	c.Go([]byte("last"))
	_, m = srv.next(t, codec.KindClientRequest)
	if r := m.(*codec.ClientRequest); r.LowestPending != r.RequestID {
		t.Errorf("after the answer, lowest pending %d, want %d", r.LowestPending, r.RequestID)
	}
}

func TestQueryCancelled(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	c := dialT(t, []string{srv.addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Query(ctx, []byte("slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Query = %v, want DeadlineExceeded", err)
	}
}

func TestEventHandlerSeesLifecycle(t *testing.T) {
	srv := newFakeServer(t)
	got := make(chan Event, 16)
	c := dialT(t, []string{srv.addr()}, WithEventHandler(func(ev Event) { got <- ev }))
	waitEvent(t, got, EventConnected)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, got, EventClosed)
}

func TestSessionLostWhenNoMemberReachable(t *testing.T) {
	srv := newFakeServer(t)
	srv.timeout = 200 * time.Millisecond
	srv.setRespond(sessionOnly)
	events := make(chan Event, 64)
	c := dialT(t, []string{srv.addr()}, WithEvents(events))
	cl := c.Go([]byte("x"))
	srv.next(t, codec.KindClientRequest)
	if err := srv.router.Close(); err != nil {
		t.Fatal(err)
	}
	// Beyond twice the session timeout the cluster has expired the session:
	// the client says so instead of retrying forever.
	ev := waitEvent(t, events, EventSessionLost)
	if !errors.Is(ev.Err, ErrSessionExpired) || !errors.Is(ev.Err, ErrTimeout) {
		t.Errorf("session lost with %v", ev.Err)
	}
	if err := waitCall(t, cl).Error; !errors.Is(err, ErrSessionExpired) {
		t.Errorf("pending call = %v", err)
	}
}

func TestSessionClosedByServer(t *testing.T) {
	srv := newFakeServer(t)
	other := newFakeServer(t)
	srv.setRespond(sessionOnly)
	events := make(chan Event, 64)
	c := dialT(t, []string{srv.addr()}, WithEvents(events))
	id, _ := srv.next(t, codec.KindCreateSession)

	// A leader stepping down names its successor: the session moves there.
	srv.send(id, &codec.SessionClosed{Reason: codec.CodeShuttingDown, Leader: codec.LeaderHint{ID: 2, ClientAddr: other.addr()}})
	if ev := waitEvent(t, events, EventReconnecting); !errors.Is(ev.Err, ErrShuttingDown) {
		t.Errorf("reconnecting because of %v", ev.Err)
	}
	if ev := waitEvent(t, events, EventConnected); ev.Endpoint != other.addr() {
		t.Fatalf("moved to %q, want %q", ev.Endpoint, other.addr())
	}
	id, _ = other.next(t, codec.KindContinueSession)

	// Expiry is final.
	other.send(id, &codec.SessionClosed{Reason: codec.CodeSessionExpired, Message: "keep-alive timeout"})
	if ev := waitEvent(t, events, EventSessionLost); !errors.Is(ev.Err, ErrSessionExpired) {
		t.Errorf("lost with %v", ev.Err)
	}
	if _, err := c.Query(context.Background(), []byte("q")); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("Query after loss = %v", err)
	}
}

// TestRedirectToOpenBreakerIsPaced: while the leader's breaker is open, a
// follower that names it as leader is asked again at most every
// WithLeaderRetry, not at once (a client used to bounce between the members
// with no pause, thousands of connections a second, seen in a chaos run
// when three continuation attempts in a row went unanswered); and when the
// members name another leader meanwhile, the client goes there without
// waiting for the old leader's breaker (a dead leader's breaker stays open
// for its whole open period).
func TestRedirectToOpenBreakerIsPaced(t *testing.T) {
	old, next := newFakeServer(t), newFakeServer(t)
	follower := newFakeServer(t)
	var leader atomic.Pointer[string]
	oldAddr, nextAddr := old.addr(), next.addr()
	leader.Store(&oldAddr)
	follower.setRespond(func(_ *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
		nonce, ok := handshakeNonce(m)
		if !ok {
			return nil
		}
		return []codec.Message{&codec.SessionRejected{Nonce: nonce, Reason: codec.CodeNotLeader,
			Leader: codec.LeaderHint{ID: 1, ClientAddr: *leader.Load()}}}
	})
	events := make(chan Event, 4096)
	dialT(t, []string{oldAddr, follower.addr()}, WithBreaker(1, time.Hour),
		WithDialTimeout(300*time.Millisecond), WithLeaderRetry(250*time.Millisecond), WithEvents(events))
	waitEvent(t, events, EventConnected)
	id, _ := old.next(t, codec.KindCreateSession)

	// The leader stops answering and its connection drops: the client
	// asks the follower, is sent back to the leader, whose handshake goes
	// unanswered and trips its breaker for an hour.
	old.setRespond(mute)
	_ = old.router.CloseConn(id)
	if ev := waitEvent(t, events, EventBreakerOpened); ev.Endpoint != oldAddr {
		t.Fatalf("breaker opened for %s, want the old leader %s", ev.Endpoint, oldAddr)
	}
	before := follower.opened.Load()
	time.Sleep(time.Second)
	if n := follower.opened.Load() - before; n > 6 {
		t.Fatalf("the follower was asked %d times in a second while the leader's breaker was open (retry every 250 ms)", n)
	}
	// A new leader is elected: the follower names it, and the client
	// continues there, long before the old leader's breaker would allow a
	// trial.
	leader.Store(&nextAddr)
	if ev := waitEvent(t, events, EventConnected); ev.Endpoint != nextAddr {
		t.Fatalf("reconnected to %s, want the new leader %s", ev.Endpoint, nextAddr)
	}
}
