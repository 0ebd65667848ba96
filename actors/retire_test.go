package actors

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/supervision"
)

// orderApp is echoApp that also records, per session, the payloads of the
// commands it applied in order. A command starting with 'F' is emitted to
// every session, as echoApp does.
type orderApp struct {
	echoApp
	mu      sync.Mutex
	applied map[fsm.SessionID][]string
}

func (a *orderApp) Apply(ctx *fsm.Context, p []byte) ([]byte, error) {
	a.mu.Lock()
	if a.applied == nil {
		a.applied = make(map[fsm.SessionID][]string)
	}
	a.applied[ctx.Session()] = append(a.applied[ctx.Session()], string(p))
	a.mu.Unlock()
	return a.echoApp.Apply(ctx, p)
}

func (a *orderApp) appliedBy(id fsm.SessionID) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.applied[id]...)
}

// countHandler counts log records whose message starts with prefix, and
// those that start with prefix2.
type countHandler struct {
	prefix, prefix2 string
	n, n2           *atomic.Int64
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.n.Add(1)
	}
	if strings.HasPrefix(r.Message, h.prefix2) {
		h.n2.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// retireRig is a node's actor tree (pathRig) with a short keep-alive
// interval, so that idle session actors retire within a test.
type retireRig struct {
	*pathRig
	app      *orderApp
	faults   *supervision.Faults
	retired  *atomic.Int64 // "session actor retired" debug records
	declined *atomic.Int64 // "retirement declined" debug records
	interval time.Duration
}

func newRetireRig(t testing.TB, fastPath bool, interval, timeout time.Duration, opts ...func(*Env)) *retireRig {
	t.Helper()
	r := &retireRig{app: &orderApp{}, faults: supervision.NewFaults(), retired: new(atomic.Int64), declined: new(atomic.Int64),
		interval: interval}
	r.pathRig = newRig(t, rigOptions{sched: benchScheduler(), app: r.app, env: func(env *Env) {
		env.Settings.KeepAliveFastPath = fastPath
		env.Settings.KeepAliveInterval = interval
		env.Settings.SessionTimeout = timeout
		env.Settings.RedeliverInterval = time.Second
		env.Faults = r.faults
		env.Log = slog.New(countHandler{prefix: "directory: session actor retired", n: r.retired,
			prefix2: "directory: session actor retirement declined", n2: r.declined})
		for _, o := range opts {
			o(env)
		}
	}})
	stop := r.pathRig.stop
	var once sync.Once
	r.pathRig.stop = func() { once.Do(stop) }
	t.Cleanup(r.stop)
	return r
}

func (r *retireRig) actors() int   { return gaugeValue(r.env.Metrics.SessionActors) }
func (r *retireRig) sessions() int { return gaugeValue(r.env.Metrics.Sessions) }

func gaugeValue(g prometheus.Gauge) int {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetGauge().GetValue())
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rclient is a client of a retireRig on one connection. Its methods are
// used by one goroutine at a time.
type rclient struct {
	r    *retireRig
	conn ConnID
	ch   <-chan []byte
	id   fsm.SessionID
	next uint64 // last request id used
	// got is every message received, in order.
	got []codec.Message
}

func (r *retireRig) client(t testing.TB, conn ConnID) *rclient {
	t.Helper()
	r.conns.mu.Lock()
	ch := r.conns.conns[conn]
	r.conns.mu.Unlock()
	if ch == nil {
		ch = r.conns.open(conn)
	}
	c := &rclient{r: r, conn: conn, ch: ch}
	r.inbox.Opened(conn, nil)
	create, _ := codec.Encode(&codec.CreateSession{Nonce: uint64(conn)})
	deadline := time.Now().Add(10 * time.Second)
	r.inbox.Received(conn, create)
	for time.Now().Before(deadline) {
		m, ok := c.receive(t, time.Until(deadline))
		if !ok {
			break
		}
		switch m := m.(type) {
		case *codec.SessionCreated:
			c.id = fsm.SessionID(m.SessionID)
			return c
		case *codec.SessionRejected:
			if m.Reason != codec.CodeClusterUnavailable {
				t.Fatalf("session rejected: %s %s", m.Reason, m.Message)
			}
			// No leader yet (the directory learns of it when it
			// starts): ask again.
			time.Sleep(time.Millisecond)
			r.inbox.Received(conn, create)
		}
	}
	t.Fatal("no session")
	return nil
}

func (c *rclient) send(t testing.TB, m codec.Message) {
	t.Helper()
	f, err := codec.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	c.r.inbox.Received(c.conn, f)
}

func (c *rclient) receive(t testing.TB, within time.Duration) (codec.Message, bool) {
	t.Helper()
	select {
	case f := <-c.ch:
		m, err := codec.Decode(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.got = append(c.got, m)
		return m, true
	case <-time.After(within):
		return nil, false
	}
}

// await receives until match holds for a message (10 s at most) and
// returns it; the others are kept in got.
func (c *rclient) await(t testing.TB, what string, match func(codec.Message) bool) codec.Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("conn %d: no %s", c.conn, what)
		}
		if m, ok := c.receive(t, left); ok && match(m) {
			return m
		}
	}
}

// command sends a command and returns its request id.
func (c *rclient) command(t testing.TB, payload string) uint64 {
	t.Helper()
	c.next++
	c.send(t, &codec.ClientRequest{RequestID: c.next, LowestPending: c.next, Payload: []byte(payload)})
	return c.next
}

func (c *rclient) awaitResponse(t testing.TB, id uint64) *codec.ClientResponse {
	t.Helper()
	m := c.await(t, fmt.Sprintf("answer to request %d", id), func(m codec.Message) bool {
		switch r := m.(type) {
		case *codec.ClientResponse:
			return r.RequestID == id
		case *codec.RequestError:
			if r.RequestID == id {
				t.Fatalf("request %d failed: %s %s", id, r.Reason, r.Message)
			}
		}
		return false
	})
	return m.(*codec.ClientResponse)
}

func (c *rclient) keepAlive(t testing.TB, ts int64, acked uint64) {
	t.Helper()
	c.send(t, &codec.KeepAlive{Timestamp: ts, AckedUpTo: acked})
	c.await(t, fmt.Sprintf("keep-alive answer %d", ts), func(m codec.Message) bool {
		r, ok := m.(*codec.KeepAliveResponse)
		return ok && r.Timestamp == ts
	})
}

func (c *rclient) query(t testing.TB, id uint64, payload string) {
	t.Helper()
	c.send(t, &codec.Query{CorrelationID: id, Consistency: codec.Linearizable, Payload: []byte(payload)})
	m := c.await(t, fmt.Sprintf("answer to query %d", id), func(m codec.Message) bool {
		switch r := m.(type) {
		case *codec.QueryResponse:
			return r.CorrelationID == id
		case *codec.QueryError:
			if r.CorrelationID == id {
				t.Fatalf("query %d failed: %s %s", id, r.Reason, r.Message)
			}
		}
		return false
	})
	if got := string(m.(*codec.QueryResponse).Result); got != payload {
		t.Fatalf("query %d answered %q, want %q", id, got, payload)
	}
}

func (c *rclient) serverRequest(t testing.TB) *codec.ServerRequest {
	t.Helper()
	return c.await(t, "server request", func(m codec.Message) bool {
		_, ok := m.(*codec.ServerRequest)
		return ok
	}).(*codec.ServerRequest)
}

// count returns how many messages received so far match.
func (c *rclient) count(match func(codec.Message) bool) int {
	n := 0
	for _, m := range c.got {
		if match(m) {
			n++
		}
	}
	return n
}

// pending reads the session's pending server requests from the state
// machine.
func (r *retireRig) pending(t testing.TB, id fsm.SessionID) []fsm.ServerRequest {
	t.Helper()
	res, err := r.env.Raft.Read(context.Background(), fsm.PendingQuery{Session: id})
	if err != nil {
		t.Fatal(err)
	}
	reqs, _ := res.([]fsm.ServerRequest)
	return reqs
}

// TestIdleSessionActorRetiresWithFastPath: with the keep-alive fast path
// on, the actors of idle bound sessions retire while their sessions stay
// (zraft_session_actors drops to 0, zraft_sessions does not), and their
// keep-alives are still answered and keep them alive past the session
// timeout, without bringing the actors back.
func TestIdleSessionActorRetiresWithFastPath(t *testing.T) {
	const interval, timeout = 50 * time.Millisecond, time.Second
	r := newRetireRig(t, true, interval, timeout)
	a, b := r.client(t, 1), r.client(t, 2)
	if r.actors() != 2 {
		t.Fatalf("%d session actors after two sessions opened, want 2", r.actors())
	}
	var ts int64
	waitFor(t, "idle session actors to retire", func() bool {
		ts++
		a.keepAlive(t, ts, 0)
		b.keepAlive(t, ts, 0)
		time.Sleep(interval / 2)
		return r.actors() == 0
	})
	if r.sessions() != 2 {
		t.Fatalf("%d sessions after their actors retired, want 2", r.sessions())
	}
	// Twice the session timeout of keep-alives only: answered, the
	// sessions stay, and no actor comes back for them.
	for end := time.Now().Add(2 * timeout); time.Now().Before(end); time.Sleep(interval) {
		ts++
		a.keepAlive(t, ts, 0)
		b.keepAlive(t, ts, 0)
		if n := r.actors(); n != 0 {
			t.Fatalf("%d session actors while only keep-alives arrive, want 0", n)
		}
	}
	if r.sessions() != 2 {
		t.Fatalf("%d sessions after %v of keep-alives, want 2 (expired while retired?)", r.sessions(), 2*timeout)
	}
	if r.retired.Load() < 2 {
		t.Fatalf("retirements logged: %d, want at least 2", r.retired.Load())
	}
	// And the session still works.
	a.awaitResponse(t, a.command(t, "after"))
}

// TestIdleSessionActorStaysWithoutFastPath: with the fast path off every
// keep-alive reaches the session actor, which therefore never retires.
func TestIdleSessionActorStaysWithoutFastPath(t *testing.T) {
	const interval = 50 * time.Millisecond
	r := newRetireRig(t, false, interval, 10*time.Second)
	a := r.client(t, 1)
	for i := range 12 { // four idle spans of retireIntervals
		a.keepAlive(t, int64(i+1), 0)
		time.Sleep(interval)
		if n := r.actors(); n != 1 {
			t.Fatalf("%d session actors with the fast path off, want 1", n)
		}
	}
	if r.retired.Load() != 0 {
		t.Fatalf("%d retirements with the fast path off, want 0", r.retired.Load())
	}
}

// TestRetiredSessionServesEveryKind: a session whose actor retired gets a
// command (answered, applied exactly once), a query, a server request
// (Deliver), and a keep-alive acknowledging a server request; each brings
// an actor back and works, and the actor retires again after. A burst of
// commands sent as the actor retires is applied in order.
func TestRetiredSessionServesEveryKind(t *testing.T) {
	const interval = 40 * time.Millisecond
	r := newRetireRig(t, true, interval, 10*time.Second)
	a, b := r.client(t, 1), r.client(t, 2)
	retiredAll := func(what string) {
		t.Helper()
		waitFor(t, "actors to retire "+what, func() bool { return r.actors() == 0 })
	}
	retiredAll("at start")

	// A command.
	id := a.command(t, "once")
	if got := string(a.awaitResponse(t, id).Result); got != "once" {
		t.Fatalf("command answered %q", got)
	}
	retiredAll("after a command")

	// A query.
	a.query(t, 1, "q")
	retiredAll("after a query")

	// Server requests to both retired sessions (a's command emits to
	// every session): each actor comes back and delivers.
	fan := a.command(t, "F-1")
	a.awaitResponse(t, fan)
	srA, srB := a.serverRequest(t), b.serverRequest(t)
	if string(srB.Payload) != "F-1" || string(srA.Payload) != "F-1" {
		t.Fatalf("server requests carry %q / %q", srA.Payload, srB.Payload)
	}
	// Unacknowledged work keeps b's actor alive (it redelivers).
	time.Sleep(5 * interval)
	if r.actors() == 0 {
		t.Fatal("every actor retired with a server request unacknowledged")
	}
	a.send(t, &codec.ServerRequestAck{RequestID: srA.RequestID})
	b.send(t, &codec.ServerRequestAck{RequestID: srB.RequestID})
	retiredAll("after the server requests were acknowledged")
	waitFor(t, "acknowledgements recorded", func() bool {
		return len(r.pending(t, a.id)) == 0 && len(r.pending(t, b.id)) == 0
	})

	// A second server request, acknowledged by a keep-alive that reaches
	// a retired actor (the fast path has not seen this ack).
	fan2 := a.command(t, "F-2")
	a.awaitResponse(t, fan2)
	srA, srB = a.serverRequest(t), b.serverRequest(t)
	a.send(t, &codec.ServerRequestAck{RequestID: srA.RequestID})
	b.send(t, &codec.ServerRequestAck{RequestID: srB.RequestID})
	retiredAll("after the second server requests were acknowledged")
	b.keepAlive(t, 7, srB.RequestID)
	retiredAll("after a keep-alive acknowledging work")
	b.keepAlive(t, 8, srB.RequestID)
	ids := map[uint64]bool{}
	b.count(func(m codec.Message) bool {
		if sr, ok := m.(*codec.ServerRequest); ok {
			ids[sr.RequestID] = true
		}
		return false
	})
	if len(ids) != 2 {
		t.Fatalf("b got server requests %v, want 2 different ones", ids)
	}

	// Exactly once: one answer to the first command, applied once.
	if n := a.count(func(m codec.Message) bool {
		r, ok := m.(*codec.ClientResponse)
		return ok && r.RequestID == id
	}); n != 1 {
		t.Fatalf("command %d answered %d times", id, n)
	}

	// A burst right as the actor retires: sent the moment the directory
	// stopped it (its actor may still be stopping, holding its mailbox).
	b.command(t, "warm")
	waitFor(t, "b's actor back", func() bool { return r.actors() >= 1 })
	waitFor(t, "b's actor retiring", func() bool { return r.actors() == 0 })
	const burst = 20
	first := b.next + 1
	for i := range burst {
		b.next++
		b.send(t, &codec.ClientRequest{RequestID: b.next, LowestPending: first, Payload: fmt.Appendf(nil, "burst-%02d", i)})
	}
	for id := first; id <= b.next; id++ {
		b.awaitResponse(t, id)
	}
	var got []string
	for _, p := range r.app.appliedBy(b.id) {
		if strings.HasPrefix(p, "burst-") {
			got = append(got, p)
		}
	}
	if len(got) != burst {
		t.Fatalf("burst applied %d times, want %d: %v", len(got), burst, got)
	}
	for i, p := range got {
		if want := fmt.Sprintf("burst-%02d", i); p != want {
			t.Fatalf("burst applied out of order: %v", got)
		}
	}
	if n := len(r.app.appliedBy(a.id)); n != 3 { // once, F-1, F-2
		t.Fatalf("a's commands applied %d times, want 3: %v", n, r.app.appliedBy(a.id))
	}
}

// TestRetirementRaceLosesNothing sends commands, queries and keep-alives
// from many sessions at random instants around their actors' retirement
// (the idle time is retireIntervals keep-alive intervals): every request
// is answered, every command exactly once, and retirements did happen.
func TestRetirementRaceLosesNothing(t *testing.T) {
	const interval = 15 * time.Millisecond
	const sessions, rounds = 12, 30
	r := newRetireRig(t, true, interval, 10*time.Second)
	clients := make([]*rclient, sessions)
	for i := range clients {
		clients[i] = r.client(t, ConnID(i+1))
	}
	idle := retireIntervals * interval
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			ft := &failT{TB: t}
			defer func() {
				if e := recover(); e != nil {
					if _, ok := e.(failed); !ok {
						panic(e)
					}
					errs <- fmt.Errorf("session %d: %s", i, ft.msg)
				}
			}()
			for round := range rounds {
				// Sleep from just under to just over the idle time.
				time.Sleep(idle - interval + time.Duration(rng.Int64N(int64(3*interval))))
				switch rng.IntN(4) {
				case 0:
					c.query(ft, uint64(round+1), fmt.Sprint(round))
				case 1:
					c.keepAlive(ft, int64(round+1), 0)
				default:
					c.awaitResponse(ft, c.command(ft, fmt.Sprintf("c%d", round)))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, c := range clients {
		applied := r.app.appliedBy(c.id)
		if int(c.next) != len(applied) {
			t.Errorf("session %v: %d commands sent, %d applied", c.id, c.next, len(applied))
		}
	}
	if r.retired.Load() == 0 {
		t.Fatal("no retirement happened: the test did not exercise the race")
	}
	t.Logf("%d retirements, %d declined (a message forwarded meanwhile)", r.retired.Load(), r.declined.Load())
}

// failT turns Fatal on a client goroutine into a recovered panic.
type failT struct {
	testing.TB
	msg string
}

type failed struct{}

func (f *failT) Fatal(args ...any) { f.msg = fmt.Sprint(args...); panic(failed{}) }
func (f *failT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(failed{})
}
func (f *failT) Helper() {}

// TestRespawnedSessionActorReadsPendingAfterPanic: an actor spawned for a
// retired session skips the read of its pending server requests, but if
// it panics the restarted actor reads them: here the Deliver that spawned
// it is lost to the panic, and the request still reaches the client.
func TestRespawnedSessionActorReadsPendingAfterPanic(t *testing.T) {
	const interval = 40 * time.Millisecond
	r := newRetireRig(t, true, interval, 10*time.Second)
	a, b := r.client(t, 1), r.client(t, 2)
	waitFor(t, "actors to retire", func() bool { return r.actors() == 0 })
	r.faults.PanicOn("session", 1, func(msg any) bool {
		d, ok := msg.(*Deliver)
		return ok && d.Session == b.id
	})
	a.awaitResponse(t, a.command(t, "F-lost"))
	sr := b.serverRequest(t)
	if string(sr.Payload) != "F-lost" {
		t.Fatalf("server request carries %q", sr.Payload)
	}
	if n := r.faults.Fired("session"); n != 1 {
		t.Fatalf("%d injected panics, want 1", n)
	}
	b.send(t, &codec.ServerRequestAck{RequestID: sr.RequestID})
	a.send(t, &codec.ServerRequestAck{RequestID: a.serverRequest(t).RequestID})
	waitFor(t, "actors to retire after the restart", func() bool { return r.actors() == 0 })
}

// TestSessionActorGivenUpAfterRespawnIsForgotten: a respawned actor whose
// supervisor gives up (it panics past MaxRestarts) is forgotten like any
// session actor stopped for good: its client is told SessionNotFound.
func TestSessionActorGivenUpAfterRespawnIsForgotten(t *testing.T) {
	const interval = 40 * time.Millisecond
	r := newRetireRig(t, true, interval, 10*time.Second)
	a := r.client(t, 1)
	waitFor(t, "actor to retire", func() bool { return r.actors() == 0 })
	limits := supervision.DefaultLimits()
	r.faults.PanicOn("session", limits.MaxRestarts+1, func(msg any) bool {
		_, ok := msg.(*SessionMsg)
		return ok
	})
	for i := range limits.MaxRestarts + 1 {
		a.send(t, &codec.Query{CorrelationID: uint64(i + 1), Consistency: codec.Linearizable, Payload: []byte("x")})
	}
	a.await(t, "SessionClosed", func(m codec.Message) bool {
		sc, ok := m.(*codec.SessionClosed)
		return ok && sc.Reason == codec.CodeSessionNotFound
	})
	waitFor(t, "the session forgotten", func() bool { return r.sessions() == 0 && r.actors() == 0 })
}

// BenchmarkIdleSessionHeap measures the live heap per idle bound session
// (after runtime.GC) with its actor alive (fast path off: actors never
// retire) and retired (fast path on, after the idle time), and reports
// both: live-B/session and retired-B/session. Run with -benchtime=1x;
// -idle.sessions sets N (default 2000).
func BenchmarkIdleSessionHeap(b *testing.B) {
	n := max(*idleSessions, 1)
	for range b.N {
		live := idleHeapPerSession(b, n, false)
		retired := idleHeapPerSession(b, n, true)
		b.ReportMetric(live, "live-B/session")
		b.ReportMetric(retired, "retired-B/session")
		b.ReportMetric(live-retired, "saved-B/session")
	}
}

// TestRetiredSessionsCostLessHeap: idle sessions whose actors retired hold
// less heap than idle sessions with live actors (a retired actor's memory
// is freed, not pinned by protoactor's child set).
func TestRetiredSessionsCostLessHeap(t *testing.T) {
	const n = 500
	live := idleHeapPerSession(t, n, false)
	retired := idleHeapPerSession(t, n, true)
	t.Logf("heap per idle session: %.0f B with its actor, %.0f B retired", live, retired)
	if retired >= live-400 {
		t.Fatalf("a retired session costs %.0f B of heap, a live one %.0f B: want at least 400 B less", retired, live)
	}
}

// idleHeapPerSession opens n sessions on a fresh rig and returns the heap
// they hold per session once idle: with their actors (fastPath false) or
// after every actor retired (fastPath true).
func idleHeapPerSession(tb testing.TB, n int, fastPath bool) float64 {
	const interval = 50 * time.Millisecond
	// As a node runs: no fault injection, no debug log.
	r := newRetireRig(tb, fastPath, interval, time.Hour, func(env *Env) {
		env.Faults, env.Log = nil, slog.New(slog.DiscardHandler)
	})
	defer r.stop()
	// The test's own per-connection channels are made before the first
	// measurement, so only the node's memory is counted.
	for i := range n {
		r.conns.open(ConnID(i + 1))
	}
	before := heapNow()
	for i := range n {
		r.client(tb, ConnID(i+1))
	}
	if fastPath {
		waitFor(tb, "every actor to retire", func() bool { return r.actors() == 0 })
		// The last ones stopped may still be tearing down.
		time.Sleep(retireIntervals * interval)
	} else {
		time.Sleep(2 * retireIntervals * interval)
		if r.actors() != n {
			tb.Fatalf("%d actors, want %d", r.actors(), n)
		}
	}
	after := heapNow()
	return (float64(after) - float64(before)) / float64(n)
}

var idleSessions = flag.Int("idle.sessions", 2000, "BenchmarkIdleSessionHeap: idle sessions measured")

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestResyncReachesRetiredSession: a resync (the dispatcher lost a notice)
// reaches sessions whose actor retired: the directory reads their pending
// server requests and spawns an actor for those that have some, so an idle
// client that sends only keep-alives still gets its work. Here the notices
// of a fan-out are lost to a dispatcher panic; both sessions get their
// server request, the live one's actor reading it, the retired one's from
// the directory.
func TestResyncReachesRetiredSession(t *testing.T) {
	const interval = 40 * time.Millisecond
	r := newRetireRig(t, true, interval, 10*time.Second)
	a, b := r.client(t, 1), r.client(t, 2)
	waitFor(t, "actors to retire", func() bool { return r.actors() == 0 })
	r.faults.PanicOn("dispatcher", 1, func(msg any) bool {
		_, ok := msg.(*notices)
		return ok
	})
	a.awaitResponse(t, a.command(t, "F-dropped"))
	waitFor(t, "the notices lost", func() bool { return r.faults.Fired("dispatcher") == 1 })
	if len(r.pending(t, b.id)) != 1 {
		t.Fatalf("b has %d pending server requests, want 1", len(r.pending(t, b.id)))
	}
	// What the dispatcher sends when the observer reports a dropped notice.
	r.sys.Root.Send(r.env.Refs.Sessions, &Resync{})
	srA := a.serverRequest(t)
	if string(srA.Payload) != "F-dropped" {
		t.Fatalf("a's server request carries %q", srA.Payload)
	}
	// b's actor had retired and b sends nothing but keep-alives.
	for i := range 3 {
		b.keepAlive(t, int64(i+1), 0)
	}
	sr := b.serverRequest(t)
	if string(sr.Payload) != "F-dropped" {
		t.Fatalf("b's server request carries %q", sr.Payload)
	}
	a.send(t, &codec.ServerRequestAck{RequestID: srA.RequestID})
	b.send(t, &codec.ServerRequestAck{RequestID: sr.RequestID})
	waitFor(t, "actors to retire after the resync", func() bool { return r.actors() == 0 })
	// A resync with nothing pending spawns no actor for a retired session.
	waitFor(t, "acknowledgements recorded", func() bool {
		return len(r.pending(t, a.id)) == 0 && len(r.pending(t, b.id)) == 0
	})
	r.sys.Root.Send(r.env.Refs.Sessions, &Resync{})
	for i := range 3 * retireIntervals {
		b.keepAlive(t, int64(10+i), 0)
		if n := r.actors(); n != 0 {
			t.Fatalf("%d actors after a resync with nothing pending, want 0", n)
		}
		time.Sleep(interval / 2)
	}
}

// BenchmarkCommandToRetiredSession measures one command to a session whose
// actor retired (spawning a new actor, then the request path of
// BenchmarkRequestThroughActors/serial), each iteration on another retired
// session; compare with that benchmark for the cost of the respawn.
func BenchmarkCommandToRetiredSession(b *testing.B) {
	const interval = 50 * time.Millisecond
	r := newRetireRig(b, true, interval, time.Hour, func(env *Env) {
		env.Faults, env.Log = nil, slog.New(slog.DiscardHandler)
	})
	clients := make([]*rclient, b.N)
	for i := range clients {
		clients[i] = r.client(b, ConnID(i+1))
	}
	waitFor(b, "every actor to retire", func() bool { return r.actors() == 0 })
	payload := make([]byte, 100)
	frame, _ := codec.Append(nil, &codec.ClientRequest{RequestID: 1, LowestPending: 1, Payload: payload}, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i, c := range clients {
		r.inbox.Received(ConnID(i+1), frame)
		if m, err := codec.Decode(<-c.ch, nil); err != nil || m.Kind() != codec.KindClientResponse {
			b.Fatalf("command to a retired session answered %v (%v)", m, err)
		}
	}
}
