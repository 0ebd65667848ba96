package client

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/internal/testcert"
	"github.com/zraft/zraft/transport"
)

// These tests reproduce the failover defects of issue 8 against scripted
// servers. Where a test is about not waiting, it sets the exponential
// backoff to an hour: a client that used the backoff for the case under test
// would not finish within waitLimit. Nothing asserts on timing.

// noBackoff makes every use of the exponential backoff take an hour.
func noBackoff() Option { return WithBackoff(time.Hour, time.Hour, 1, 0) }

// rejectN answers the first n CreateSession/ContinueSession messages it sees
// (across every server that shares it) with reply(i), then lets the
// standard responder answer.
type rejectN struct {
	mu    sync.Mutex
	seen  int
	n     int
	reply func(i int, nonce uint64) codec.Message
}

func (r *rejectN) respond(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
	nonce, ok := handshakeNonce(m)
	if !ok {
		return standard(s, id, m)
	}
	r.mu.Lock()
	i := r.seen
	r.seen++
	r.mu.Unlock()
	if i < r.n {
		return []codec.Message{r.reply(i, nonce)}
	}
	return standard(s, id, m)
}

func TestHintsFollowedAtOnceAndNoLeaderAnswersRetriedQuickly(t *testing.T) {
	f1, f2, leader := newFakeServer(t), newFakeServer(t), newFakeServer(t)
	// An election in progress: the followers know no leader for a while
	// (ClusterUnavailable, NotLeader without a hint), then name the leader,
	// which is in no endpoint list.
	var elected atomic.Bool
	follower := func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		cs, ok := m.(*codec.CreateSession)
		if !ok {
			return nil
		}
		if !elected.Load() {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeClusterUnavailable}}
		}
		return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeNotLeader,
			Leader: codec.LeaderHint{ID: 3, ClientAddr: leader.addr()}}}
	}
	var asked atomic.Int64
	counting := func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		if _, ok := m.(*codec.CreateSession); ok && asked.Add(1) == 8 {
			elected.Store(true)
		}
		return follower(s, id, m)
	}
	f1.setRespond(counting)
	f2.setRespond(counting)
	leader.members = []codec.Member{{ID: 1, ClientAddr: f1.addr()}, {ID: 2, ClientAddr: f2.addr()}, {ID: 3, ClientAddr: leader.addr()}}

	events := make(chan Event, 256)
	c := dialT(t, []string{f1.addr(), f2.addr()}, noBackoff(), WithLeaderRetry(10*time.Millisecond), WithEvents(events))
	if ev := waitEvent(t, events, EventConnected); ev.Endpoint != leader.addr() {
		t.Fatalf("bound to %s, want the hinted leader %s", ev.Endpoint, leader.addr())
	}
	if n := f1.opened.Load() + f2.opened.Load(); n < 8 {
		t.Fatalf("followers asked %d times, want every member asked while no leader is known", n)
	}

	// The leader fails; the next leader is not ready at once and first
	// answers ClusterUnavailable while naming itself, then serves.
	id, _ := leader.next(t, codec.KindCreateSession)
	next := &rejectN{n: 3, reply: func(_ int, nonce uint64) codec.Message {
		return &codec.SessionRejected{Nonce: nonce, Reason: codec.CodeClusterUnavailable,
			Leader: codec.LeaderHint{ID: 2, ClientAddr: f2.addr()}}
	}}
	f2.setRespond(next.respond)
	leader.setRespond(func(_ *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
		if cs, ok := m.(*codec.ContinueSession); ok {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeNotLeader,
				Leader: codec.LeaderHint{ID: 2, ClientAddr: f2.addr()}}}
		}
		return nil
	})
	f1.setRespond(func(_ *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
		if cs, ok := m.(*codec.ContinueSession); ok {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeNotLeader,
				Leader: codec.LeaderHint{ID: 2, ClientAddr: f2.addr()}}}
		}
		return nil
	})
	_ = leader.router.CloseConn(id)
	for {
		ev := waitEvent(t, events, EventConnected)
		if ev.Endpoint == f2.addr() {
			break
		}
	}
	if res, err := c.Submit(context.Background(), []byte("after failover")); err != nil || string(res) != "after failover" {
		t.Fatalf("Submit after failover = %q, %v", res, err)
	}
}

func TestBreakerNotOpenedByIsolatedRequestTimeouts(t *testing.T) {
	srv := newFakeServer(t)
	// The first attempt of a few requests is lost; everything else is
	// answered: a healthy leader under load.
	var mu sync.Mutex
	lost := map[uint64]bool{50: true, 150: true, 250: true}
	srv.setRespond(func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		if r, ok := m.(*codec.ClientRequest); ok {
			mu.Lock()
			drop := lost[r.RequestID]
			delete(lost, r.RequestID)
			mu.Unlock()
			if drop {
				return nil
			}
		}
		return standard(s, id, m)
	})
	srv.ka = time.Second // keep-alives must not be what this test is about
	events := make(chan Event, 256)
	c := dialT(t, []string{srv.addr()}, WithRequestTimeout(20*time.Millisecond), WithMaxAttempts(1000),
		WithBreaker(3, time.Hour), noBackoff(), WithEvents(events))
	waitEvent(t, events, EventConnected)
	var calls []*Call
	for i := 0; i < 300; i++ {
		calls = append(calls, c.Go([]byte("x")))
	}
	for _, cl := range calls {
		if err := waitCall(t, cl).Error; err != nil {
			t.Fatalf("call failed: %v", err)
		}
	}
	for {
		select {
		case ev := <-events:
			if ev.Type == EventBreakerOpened || ev.Type == EventReconnecting {
				t.Fatalf("healthy leader abandoned after isolated timeouts: %v", ev)
			}
			continue
		default:
		}
		break
	}
}

func TestSessionNotLostWhileMembersAnswer(t *testing.T) {
	srv := newFakeServer(t)
	srv.timeout = 100 * time.Millisecond // the cluster's session timeout
	events := make(chan Event, 256)
	c := dialT(t, []string{srv.addr()}, WithLeaderRetry(5*time.Millisecond), WithEvents(events))
	id, _ := srv.next(t, codec.KindCreateSession)
	// No leader for many session timeouts, but the member keeps
	// answering: only the cluster may declare the session expired.
	var until atomic.Int64
	until.Store(time.Now().Add(time.Second).UnixNano())
	srv.setRespond(func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		if cs, ok := m.(*codec.ContinueSession); ok && time.Now().UnixNano() < until.Load() {
			return []codec.Message{&codec.SessionRejected{Nonce: cs.Nonce, Reason: codec.CodeClusterUnavailable}}
		}
		return standard(s, id, m)
	})
	_ = srv.router.CloseConn(id)
	waitEvent(t, events, EventReconnecting)
	waitEvent(t, events, EventConnected)
	if res, err := c.Submit(context.Background(), []byte("still here")); err != nil || string(res) != "still here" {
		t.Fatalf("Submit = %q, %v", res, err)
	}
	if st := c.State(); st != StateConnected {
		t.Fatalf("State = %v", st)
	}
}

func TestCloseFromHandlers(t *testing.T) {
	t.Run("event handler", func(t *testing.T) {
		srv := newFakeServer(t)
		var c *Conn
		ready := make(chan struct{})
		closed := make(chan struct{})
		handler := func(ev Event) {
			if ev.Type != EventReconnecting {
				return
			}
			<-ready
			_ = c.Close()
			close(closed)
		}
		c = dialT(t, []string{srv.addr()}, WithEventHandler(handler))
		close(ready)
		id, _ := srv.next(t, codec.KindCreateSession)
		srv.setRespond(mute)
		_ = srv.router.CloseConn(id)
		select {
		case <-closed:
		case <-time.After(waitLimit):
			t.Fatal("Close called from the event handler did not return")
		}
		if st := c.State(); st != StateClosed {
			t.Fatalf("State = %v", st)
		}
	})
	t.Run("server request handler", func(t *testing.T) {
		srv := newFakeServer(t)
		var c *Conn
		ready := make(chan struct{})
		closed := make(chan struct{})
		handler := func(ServerRequest) {
			<-ready
			_ = c.Close()
			close(closed)
		}
		c = dialT(t, []string{srv.addr()}, WithServerRequestHandler(handler))
		close(ready)
		id, _ := srv.next(t, codec.KindCreateSession)
		srv.send(id, &codec.ServerRequest{RequestID: 1, Payload: []byte("work")})
		select {
		case <-closed:
		case <-time.After(waitLimit):
			t.Fatal("Close called from the server-request handler did not return")
		}
	})
}

func TestSentCommandsEndAsOutcomeUnknown(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		srv := newFakeServer(t)
		srv.setRespond(sessionOnly)
		c := dialT(t, []string{srv.addr()}, WithRequestWindow(1))
		sent, queued := c.Go([]byte("sent")), c.Go([]byte("queued"))
		srv.next(t, codec.KindClientRequest)
		_ = c.Close()
		if err := waitCall(t, sent).Error; !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
			t.Errorf("sent command: %v, want ErrOutcomeUnknown and ErrClosed", err)
		}
		if err := waitCall(t, queued).Error; errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrClosed) {
			t.Errorf("command never sent: %v, want ErrClosed alone", err)
		}
	})
	t.Run("session lost", func(t *testing.T) {
		srv := newFakeServer(t)
		srv.setRespond(sessionOnly)
		c := dialT(t, []string{srv.addr()})
		sent := c.Go([]byte("sent"))
		id, _ := srv.next(t, codec.KindClientRequest)
		srv.send(id, &codec.SessionClosed{Reason: codec.CodeSessionExpired})
		if err := waitCall(t, sent).Error; !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrSessionExpired) {
			t.Errorf("sent command: %v, want ErrOutcomeUnknown and ErrSessionExpired", err)
		}
	})
}

// cacheServer answers like the state machine's response cache: a request
// that is neither answered nor fits in the cache (answered ids at or above
// the client's lowest pending id, at most limit) gets TooManyInFlight. The
// first attempt of request 1 is lost.
func cacheServer(limit int, refused *atomic.Int64) responder {
	var mu sync.Mutex
	answered := map[uint64]bool{}
	lostOnce := false
	return func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		r, ok := m.(*codec.ClientRequest)
		if !ok {
			return sessionOnly(s, id, m)
		}
		mu.Lock()
		defer mu.Unlock()
		if r.RequestID == 1 && !lostOnce {
			lostOnce = true
			return nil
		}
		for a := range answered {
			if a < r.LowestPending {
				delete(answered, a)
			}
		}
		if !answered[r.RequestID] && len(answered) >= limit {
			refused.Add(1)
			return []codec.Message{&codec.RequestError{RequestID: r.RequestID, Reason: codec.CodeTooManyInFlight}}
		}
		answered[r.RequestID] = true
		return []codec.Message{&codec.ClientResponse{RequestID: r.RequestID, Result: r.Payload}}
	}
}

func TestOldestRequestNeverStarved(t *testing.T) {
	srv := newFakeServer(t)
	var refused atomic.Int64
	srv.setRespond(cacheServer(1024, &refused)) // the servers' default cache
	c := dialT(t, []string{srv.addr()}, WithRequestTimeout(300*time.Millisecond), WithMaxAttempts(20), WithMaxPending(2000))
	var calls []*Call
	for i := 0; i < 1100; i++ {
		calls = append(calls, c.Go([]byte("x")))
	}
	for i, cl := range calls {
		if err := waitCall(t, cl).Error; err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	if n := refused.Load(); n != 0 {
		t.Errorf("the server refused %d requests as TooManyInFlight: ids ran past its cache", n)
	}
}

func TestOutOfOrderResentAfterEarlierRequest(t *testing.T) {
	srv := newFakeServer(t)
	var mu sync.Mutex
	var ran []uint64
	var seen []uint64
	overloaded := false
	srv.setRespond(func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message {
		r, ok := m.(*codec.ClientRequest)
		if !ok {
			return sessionOnly(s, id, m)
		}
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.RequestID)
		// The state machine runs ids in order: 1 is refused once as
		// overloaded, so 2 arrives before 1 ran.
		if r.RequestID == 1 && !overloaded {
			overloaded = true
			return []codec.Message{&codec.RequestError{RequestID: 1, Reason: codec.CodeOverloaded}}
		}
		if next := uint64(len(ran) + 1); r.RequestID != next {
			return []codec.Message{&codec.RequestError{RequestID: r.RequestID, Reason: codec.CodeOutOfOrder}}
		}
		ran = append(ran, r.RequestID)
		return []codec.Message{&codec.ClientResponse{RequestID: r.RequestID, Result: r.Payload}}
	})
	// One attempt each: the OutOfOrder answer must not use up request 2's.
	c := dialT(t, []string{srv.addr()}, WithMaxAttempts(2))
	a, b := c.Go([]byte("1")), c.Go([]byte("2"))
	if err := waitCall(t, a).Error; err != nil {
		t.Fatalf("request 1: %v", err)
	}
	if err := waitCall(t, b).Error; err != nil {
		t.Fatalf("request 2: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ran) != 2 || ran[0] != 1 || ran[1] != 2 {
		t.Fatalf("ran %v, want [1 2]; the server saw %v", ran, seen)
	}
}

func TestDialFailsAtOnceOnCertificateErrors(t *testing.T) {
	cert, pool := testcert.SelfSigned(t, "zraft test")
	_, otherPool := testcert.SelfSigned(t, "another CA")
	cfg := transport.DefaultRouterConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	srv := newFakeServerConfig(t, cfg)
	mutualCfg := transport.DefaultRouterConfig()
	mutualCfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	mutual := newFakeServerConfig(t, mutualCfg)

	for _, tc := range []struct {
		name string
		addr string
		tls  *tls.Config
	}{
		{"unknown authority", srv.addr(), &tls.Config{RootCAs: otherPool, MinVersion: tls.VersionTLS13}},
		{"wrong name", srv.addr(), &tls.Config{RootCAs: pool, ServerName: "elsewhere.example", MinVersion: tls.VersionTLS13}},
		{"no client certificate", mutual.addr(), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The context outlives waitLimit's share: a client that
			// retried until it ended would fail the test by its error.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := Dial(ctx, []string{tc.addr}, testOptions(WithTLS(tc.tls))...)
			if !errors.Is(err, ErrTLS) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Dial = %v, want ErrTLS at once", err)
			}
		})
	}
}
