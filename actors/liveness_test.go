package actors

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

// frameRecorder is a Conns that keeps the frames sent to each connection.
type frameRecorder struct {
	mu     sync.Mutex
	frames map[ConnID][][]byte
}

func (f *frameRecorder) Send(conn ConnID, frame []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frames == nil {
		f.frames = map[ConnID][][]byte{}
	}
	f.frames[conn] = append(f.frames[conn], frame)
	return nil
}

func (f *frameRecorder) CloseConn(ConnID) error { return nil }

func (f *frameRecorder) sentTo(conn ConnID) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.frames[conn]...)
}

// TestInboxAnswersKeepAlivesWithoutActors checks the keep-alive fast path:
// a keep-alive on a bound connection that acknowledges nothing new is
// answered by the inbox itself and never reaches the session directory,
// and its sign of life is noted for the keepalive actor. A keep-alive on an
// unbound connection, or one acknowledging new server requests, goes to the
// directory as before.
func TestInboxAnswersKeepAlivesWithoutActors(t *testing.T) {
	sys := quietSystem()
	got := make(chan *Inbound, 16)
	env := &Env{Settings: Settings{Limits: codec.DefaultLimits(), KeepAliveFastPath: true}, Metrics: NewMetrics(nil), Log: slog.New(slog.DiscardHandler)}
	sessions := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*Inbound); ok {
			env.Inbox.handled(m.size)
			got <- m
		}
	}))
	defer sys.Root.Stop(sessions)
	conns := &frameRecorder{}
	now := time.Unix(1_800_000_000, 0)
	env.Refs.Sessions, env.Conns, env.Now = sessions, conns, func() time.Time { return now }
	in := NewInbox(sys, env, 100, 1<<20)
	env.Inbox = in
	session := fsm.SessionID{15: 7}
	in.Liveness().Bind(1, session, 10*time.Second, now)

	keepAlive := func(conn ConnID, ts int64, acked uint64) {
		t.Helper()
		frame, err := codec.Encode(&codec.KeepAlive{Timestamp: ts, AckedUpTo: acked})
		if err != nil {
			t.Fatal(err)
		}
		in.Received(conn, frame)
	}
	keepAlive(1, 41, 0)
	keepAlive(1, 42, 0)
	replies := conns.sentTo(1)
	if len(replies) != 2 {
		t.Fatalf("%d replies on the bound connection, want 2", len(replies))
	}
	for i, f := range replies {
		m, err := codec.Decode(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := m.(*codec.KeepAliveResponse); !ok || r.Timestamp != int64(41+i) {
			t.Fatalf("reply %d: %#v, want KeepAliveResponse{%d}", i, m, 41+i)
		}
	}
	if f, b := in.Pending(); f != 0 || b != 0 {
		t.Fatalf("%d frames (%d bytes) still admitted after the fast path", f, b)
	}
	var heard []fsm.SessionID
	in.Liveness().Drain(func(id fsm.SessionID, _ time.Duration, at time.Time) {
		heard = append(heard, id)
		if !at.Equal(now) {
			t.Errorf("noted at %v, want %v", at, now)
		}
	})
	if len(heard) != 1 || heard[0] != session {
		t.Fatalf("drained %v, want the session once", heard)
	}

	// Unbound: the directory answers (it refuses or routes).
	keepAlive(2, 1, 0)
	// New acknowledgements: the session actor must see them.
	keepAlive(1, 43, 5)
	for _, want := range []ConnID{2, 1} {
		select {
		case m := <-got:
			if m.Conn != want {
				t.Fatalf("directory got a message of connection %d, want %d", m.Conn, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the directory never got the keep-alive of connection %d", want)
		}
	}
	// The same acknowledgement again is nothing new: fast path.
	keepAlive(1, 44, 5)
	if n := len(conns.sentTo(1)); n != 3 {
		t.Fatalf("%d replies on the bound connection, want 3", n)
	}
	select {
	case m := <-got:
		t.Fatalf("directory got %#v", m.Msg)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestLivenessSilentAndUnbind(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	l := NewLiveness(start)
	l.Bind(1, fsm.SessionID{15: 1}, time.Second, start)
	l.Bind(2, fsm.SessionID{15: 2}, time.Second, start)
	l.Bind(3, fsm.SessionID{15: 3}, 5*time.Second, start)
	if bound, _ := l.Heard(1, start.Add(900*time.Millisecond), false, 0); !bound {
		t.Fatal("connection 1 not bound")
	}
	silent := l.Silent(start.Add(1500*time.Millisecond), 0, 10, nil)
	if len(silent) != 1 || silent[0] != 2 {
		t.Fatalf("silent %v, want [2]", silent)
	}
	if got := l.Silent(start.Add(1500*time.Millisecond), time.Second, 10, nil); len(got) != 0 {
		t.Fatalf("silent %v within the grace, want none", got)
	}
	if got := l.Silent(start.Add(10*time.Second), 0, 2, nil); len(got) != 2 {
		t.Fatalf("silent %v, want 2 (the bound)", got)
	}
	// A session whose expiry is under way is spared.
	spare := func(id fsm.SessionID) bool { return id == fsm.SessionID{15: 2} }
	if got := l.Silent(start.Add(1500*time.Millisecond), 0, 10, spare); len(got) != 0 {
		t.Fatalf("silent %v with session 2 spared, want none", got)
	}
	l.Unbind(2)
	if bound, answer := l.Heard(2, start, true, 0); bound || answer {
		t.Fatal("an unbound connection's keep-alive took the fast path")
	}
	if _, answer := l.Heard(1, start, true, 0); !answer {
		t.Fatal("keep-alive not answered on the fast path")
	}
	l.Clear()
	if l.Bound() != 0 {
		t.Fatalf("%d bound after Clear", l.Bound())
	}
	n := 0
	l.Drain(func(fsm.SessionID, time.Duration, time.Time) { n++ })
	if n != 0 {
		t.Fatalf("%d notes drained after Clear", n)
	}
	var nilTable *Liveness
	if bound, _ := nilTable.Heard(1, start, true, 0); bound {
		t.Fatal("a nil table bound a connection")
	}
}

// nopConns discards every frame.
type nopConns struct{}

func (nopConns) Send(ConnID, []byte) error { return nil }
func (nopConns) CloseConn(ConnID) error    { return nil }

// BenchmarkKeepAlivePath measures one keep-alive through the node's inbox
// as the transport delivers it: decoded, answered (encoded and handed to
// the connections) and its sign of life noted, on the fast path of a bound
// connection. Run with -benchmem: the allocations per keep-alive are the
// point. The keepalive actor's share, one Drain per tick, is measured by
// BenchmarkLivenessDrain.
func BenchmarkKeepAlivePath(b *testing.B) {
	sys := quietSystem()
	now := time.Unix(1_800_000_000, 0)
	env := &Env{Settings: Settings{Limits: codec.DefaultLimits()}, Metrics: NewMetrics(nil), Log: slog.New(slog.DiscardHandler),
		Conns: nopConns{}, Now: func() time.Time { return now }}
	env.Refs.Sessions = sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*Inbound); ok {
			env.Inbox.handled(m.size)
		}
	}))
	defer sys.Root.Stop(env.Refs.Sessions)
	in := NewInbox(sys, env, 1<<16, 1<<30)
	env.Inbox = in
	in.Liveness().Bind(1, fsm.SessionID{15: 1}, 10*time.Second, now)
	frame, err := codec.Encode(&codec.KeepAlive{Timestamp: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		// The transport hands over a fresh frame each time; the copy is
		// part of what a real keep-alive costs.
		in.Received(1, append([]byte(nil), frame...))
	}
}

// BenchmarkLivenessDrain measures the keepalive actor's per-tick drain of
// 100k sessions each heard once, per session.
func BenchmarkLivenessDrain(b *testing.B) {
	const n = 100_000
	now := time.Unix(1_800_000_000, 0)
	l := NewLiveness(now)
	for i := range n {
		l.Bind(ConnID(i+1), fsm.SessionID{12: byte(i >> 16), 13: byte(i >> 8), 14: byte(i)}, 10*time.Second, now)
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i := range n {
			l.Heard(ConnID(i+1), now, true, 0)
		}
		b.StartTimer()
		seen := 0
		l.Drain(func(fsm.SessionID, time.Duration, time.Time) { seen++ })
		if seen != n {
			b.Fatalf("drained %d, want %d", seen, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/session")
}

// TestContinuationIsASignOfLifeOncePerInterval checks issue 10's rule: a
// session bound to connection after connection (a client cycling
// ContinueSession) reports liveness to the keepalive actor at most once per
// keep-alive interval, not once per continuation.
func TestContinuationIsASignOfLifeOncePerInterval(t *testing.T) {
	sys := quietSystem()
	type probeSync struct{}
	seen := make(chan *Seen, 64)
	keepAlive := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *Seen:
			seen <- m
		case probeSync:
			c.Respond(m)
		}
	}))
	// The session actor reads its pending work at start and at Resync; the
	// probe answers nothing and tells the test each read arrived.
	reads := make(chan struct{}, 64)
	raft := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().(*Read); ok {
			reads <- struct{}{}
		}
	}))
	defer sys.Root.Stop(keepAlive)
	defer sys.Root.Stop(raft)
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	env := &Env{Settings: Settings{KeepAliveInterval: time.Second, Limits: codec.DefaultLimits()}, Metrics: NewMetrics(nil),
		Log: slog.New(slog.DiscardHandler), Now: clock.Now, Refs: Refs{KeepAlive: keepAlive, Raft: raft}, Conns: nopConns{}}
	id := fsm.SessionID{15: 9}
	var session *actor.PID
	spawned := make(chan struct{})
	parent := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if _, ok := c.Message().(*actor.Started); ok {
			session = c.Spawn(actor.PropsFromProducer(NewSession(env, fsm.SessionInfo{ID: id, Timeout: 10 * time.Second}, new(backlog))))
			close(spawned)
		}
	}))
	defer sys.Root.Stop(parent)
	<-spawned
	wait := func() {
		t.Helper()
		select {
		case <-reads:
		case <-time.After(10 * time.Second):
			t.Fatal("the session actor did not read")
		}
	}
	wait() // its start
	// count returns the signs of life reported for the binds sent so far:
	// a Resync after them makes the actor read once it has handled them
	// (and so sent every Seen they caused), and a request to the probe
	// then makes sure the probe has taken every such Seen.
	count := func() int {
		t.Helper()
		sys.Root.Send(session, &Resync{})
		wait()
		if _, err := sys.Root.RequestFuture(keepAlive, probeSync{}, 10*time.Second).Result(); err != nil {
			t.Fatal(err)
		}
		n := len(seen)
		for range n {
			<-seen
		}
		return n
	}
	for conn := ConnID(1); conn <= 5; conn++ {
		sys.Root.Send(session, &bind{conn: conn})
	}
	if n := count(); n != 1 {
		t.Fatalf("5 continuations within one interval reported %d signs of life, want 1", n)
	}
	clock.advance(time.Second)
	for conn := ConnID(6); conn <= 8; conn++ {
		sys.Root.Send(session, &bind{conn: conn})
	}
	if n := count(); n != 1 {
		t.Fatalf("3 continuations in the next interval reported %d signs of life, want 1", n)
	}
}
