package actors

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/supervision"
)

var oneByOneNotices = flag.Bool("actors.one-by-one", false, "path benchmarks: the state machine reports notices one by one, not per command")

var defaultDispatcher = flag.Bool("actors.default-dispatcher", false, "path benchmarks: use protoactor's goroutine-per-activation dispatcher")

// echoApp answers every command with its payload and every query with its
// payload; a command starting with 'F' is also emitted to every session
// (a fan-out, as a kv write to a watched key).
type echoApp struct{ sessions []fsm.SessionID }

func (a *echoApp) Apply(ctx *fsm.Context, p []byte) ([]byte, error) {
	if len(p) > 0 && p[0] == 'F' {
		for _, id := range a.sessions {
			if err := ctx.Emit(fsm.ToSession(id), p); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}
func (a *echoApp) Query(q []byte) ([]byte, error) { return q, nil }
func (a *echoApp) SessionOpened(_ *fsm.Context, info fsm.SessionInfo) error {
	a.sessions = append(a.sessions, info.ID)
	return nil
}
func (*echoApp) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {}
func (*echoApp) SaveSnapshot(io.Writer) error                                                     { return nil }
func (*echoApp) RecoverFromSnapshot(io.Reader) error                                              { return nil }

// oneByOne hides the Observer's batch method, so the machine reports each
// notice on its own (how it was before fsm.BatchObserver).
type oneByOne struct{ o *Observer }

func (p oneByOne) ServerRequestAdded(s fsm.SessionID, r fsm.ServerRequest) {
	p.o.ServerRequestAdded(s, r)
}
func (p oneByOne) SessionRemoved(s fsm.SessionID, r fsm.RemoveReason) { p.o.SessionRemoved(s, r) }

// machineRaft is a single-node "cluster" without Raft: commands are applied
// to a real state machine when they are queued, reads look it up. It stands
// in for dragonboat so that a benchmark measures the actors' path alone.
type machineRaft struct {
	mu sync.Mutex
	m  *fsm.Machine
}

type doneProposal struct {
	v    uint64
	data []byte
	err  error
}

func (p *doneProposal) Wait(context.Context) (uint64, []byte, error) { return p.v, p.data, p.err }

func (r *machineRaft) Propose(_ context.Context, cmd []byte) (uint64, []byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.m.Apply(cmd)
	return res.Value, res.Data, err
}

func (r *machineRaft) Start(ctx context.Context, cmd []byte) (Proposal, error) {
	v, data, err := r.Propose(ctx, cmd)
	return &doneProposal{v: v, data: data, err: err}, nil
}

func (r *machineRaft) Read(_ context.Context, q any) (any, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m.Lookup(q)
}

func (r *machineRaft) ReadBatch(ctx context.Context, qs []any) ([]any, []error, error) {
	res, errs := make([]any, len(qs)), make([]error, len(qs))
	for i, q := range qs {
		res[i], errs[i] = r.Read(ctx, q)
	}
	return res, errs, nil
}

func (r *machineRaft) StaleRead(q any) (any, error)    { return r.Read(context.Background(), q) }
func (r *machineRaft) TransferLeadership(uint64) error { return nil }
func (r *machineRaft) Leader() (uint64, uint64, bool)  { return 1, 1, true }

// chanConns hands every frame sent to a connection to that connection's
// channel (frames to unknown connections are dropped).
type chanConns struct {
	mu    sync.Mutex
	conns map[ConnID]chan []byte
}

func (c *chanConns) open(id ConnID) chan []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan []byte, 4096)
	c.conns[id] = ch
	return ch
}

func (c *chanConns) Send(id ConnID, frame []byte) error {
	c.mu.Lock()
	ch := c.conns[id]
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- frame:
		default:
		}
	}
	return nil
}

func (c *chanConns) CloseConn(ConnID) error { return nil }

// pathRig is a node's actor tree (raft bridge, dispatcher, keepalive,
// sessions directory, gateway) on a machineRaft, fed frames through the
// Inbox as the transport's reader goroutines feed it.
type pathRig struct {
	sys   *actor.ActorSystem
	inbox *Inbox
	conns *chanConns
	work  *Work
	env   *Env
	stop  func()
}

func newPathRig(tb testing.TB) *pathRig { return newPathRigWith(tb, benchScheduler()) }

func newPathRigWith(tb testing.TB, sched *Scheduler) *pathRig {
	tb.Helper()
	return newRig(tb, rigOptions{sched: sched})
}

// rigOptions vary a pathRig: the scheduler, the application (nil: an
// echoApp), a hook that adjusts the environment before the actors start,
// and a hook wrapping the Raft stand-in.
type rigOptions struct {
	sched    *Scheduler
	app      fsm.Application
	env      func(*Env)
	wrapRaft func(Raft) Raft
}

func newRig(tb testing.TB, o rigOptions) *pathRig {
	tb.Helper()
	sched := o.sched
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}), actor.WithDeadLetterThrottleInterval(50*time.Millisecond))
	pid := func(name string) *actor.PID { return sys.NewLocalPID("node/" + name) }
	refs := Refs{Gateway: pid("gateway"), Sessions: pid("sessions"), KeepAlive: pid("keepalive"),
		Raft: pid("raft"), Dispatcher: pid("dispatcher")}
	obs := NewObserver(sys, refs.Dispatcher, 1<<16)
	cfg := fsm.DefaultConfig()
	var fobs fsm.Observer = obs
	if *oneByOneNotices {
		fobs = oneByOne{obs}
	}
	var app fsm.Application = &echoApp{}
	if o.app != nil {
		app = o.app
	}
	m, err := fsm.New(app, cfg, fobs)
	if err != nil {
		tb.Fatal(err)
	}
	var raft Raft = &machineRaft{m: m}
	if o.wrapRaft != nil {
		raft = o.wrapRaft(raft)
	}
	ctx, cancel := context.WithCancel(context.Background())
	metrics := NewMetrics(nil)
	log := slog.New(slog.DiscardHandler)
	work := NewWork(ctx, raft, 1<<16, 5*time.Second, metrics, log)
	conns := &chanConns{conns: map[ConnID]chan []byte{}}
	env := &Env{
		Settings: Settings{NodeID: 1, Members: []Member{{ID: 1, ClientAddr: "127.0.0.1:1"}},
			KeepAliveInterval: time.Second, SessionTimeout: 10 * time.Second, ProposalTimeout: 5 * time.Second,
			AckBatchInterval: 5 * time.Millisecond, RedeliverInterval: time.Second, MaxInFlight: 1024,
			MaxProposals: 1 << 16, SessionCreateRate: 1 << 20, Limits: codec.DefaultLimits(),
			Supervision: supervision.DefaultLimits()},
		Refs: refs, Conns: conns, Raft: raft, Work: work, Metrics: metrics, Log: log, Now: time.Now,
		Scheduler: sched,
	}
	if o.env != nil {
		o.env(env)
	}
	inbox := NewInbox(sys, env, 1<<16, 1<<30)
	env.Inbox = inbox
	for _, a := range []struct {
		name string
		p    actor.Producer
	}{
		{"raft", NewRaft(env)}, {"dispatcher", NewDispatcher(env, obs)}, {"keepalive", NewKeepAlive(env)},
		{"sessions", NewSessions(env)}, {"gateway", NewGateway(env, inbox)},
	} {
		if _, err := sys.Root.SpawnNamed(env.Props(a.name, a.p), "node/"+a.name); err != nil {
			tb.Fatal(err)
		}
	}
	env.TreeUp.Store(true)
	r := &pathRig{sys: sys, inbox: inbox, conns: conns, work: work, env: env}
	r.stop = func() {
		for _, p := range []*actor.PID{refs.Gateway, refs.Sessions, refs.KeepAlive, refs.Dispatcher, refs.Raft} {
			_ = sys.Root.StopFuture(p).Wait()
		}
		cancel()
		work.Wait()
		if sched != nil {
			sched.Close()
		}
		sys.Shutdown()
	}
	return r
}

// open creates a session on connection id and returns the connection's
// frames.
func (r *pathRig) open(tb testing.TB, id ConnID) <-chan []byte {
	tb.Helper()
	ch := r.conns.open(id)
	r.inbox.Opened(id, nil)
	frame, err := codec.Encode(&codec.CreateSession{Nonce: uint64(id)})
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		r.inbox.Received(id, frame)
		select {
		case f := <-ch:
			m, err := codec.Decode(f, nil)
			if err != nil {
				tb.Fatal(err)
			}
			if _, ok := m.(*codec.SessionCreated); ok {
				return ch
			}
			// Not ready yet (the directory learns of the leader when it
			// starts): ask again.
			time.Sleep(time.Millisecond)
		case <-deadline:
			tb.Fatal("no session")
		}
	}
}

// BenchmarkRequestThroughActors measures one client request from the
// moment its frame is decoded on the connection's goroutine (Inbox) through
// the sessions directory, the session actor, Work's batch proposer, a state
// machine without Raft, and back to the encoded reply handed to the
// connection; one request at a time ("serial") and 64 sessions with one
// request each in flight ("parallel"). allocs/op is the number to watch: it
// does not depend on how busy the machine is.
func BenchmarkRequestThroughActors(b *testing.B) {
	payload := make([]byte, 100)
	b.Run("serial", func(b *testing.B) {
		r := newPathRig(b)
		defer r.stop()
		ch := r.open(b, 1)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			id := uint64(i + 1)
			frame, _ := codec.Append(nil, &codec.ClientRequest{RequestID: id, LowestPending: id, Payload: payload}, nil)
			r.inbox.Received(1, frame)
			<-ch
		}
	})
	b.Run("parallel", func(b *testing.B) {
		r := newPathRig(b)
		defer r.stop()
		const sessions = 64
		chans := make([]<-chan []byte, sessions)
		for i := range chans {
			chans[i] = r.open(b, ConnID(i+1))
		}
		var next atomic.Int64
		per := b.N/sessions + 1
		b.ReportAllocs()
		b.ResetTimer()
		var wg sync.WaitGroup
		for s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					if next.Add(1) > int64(b.N) {
						return
					}
					id := uint64(i + 1)
					frame, _ := codec.Append(nil, &codec.ClientRequest{RequestID: id, LowestPending: id, Payload: payload}, nil)
					r.inbox.Received(ConnID(s+1), frame)
					<-chans[s]
				}
			}()
		}
		wg.Wait()
	})
}

// BenchmarkQueryThroughActors is BenchmarkRequestThroughActors for a
// linearizable query (batched ReadIndex round, here a plain lookup).
func BenchmarkQueryThroughActors(b *testing.B) {
	r := newPathRig(b)
	defer r.stop()
	ch := r.open(b, 1)
	payload := make([]byte, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		frame, _ := codec.Append(nil, &codec.Query{CorrelationID: uint64(i + 1), Consistency: codec.Linearizable, Payload: payload}, nil)
		r.inbox.Received(1, frame)
		<-ch
	}
}

// benchScheduler is the scheduler the path benchmarks run with:
// NewScheduler(64, 300) as the node uses, or protoactor's default dispatcher
// (nil) with -actors.default-dispatcher, to compare the two in one build.
func benchScheduler() *Scheduler {
	if *defaultDispatcher {
		return nil
	}
	return NewScheduler(64, 300)
}

// ackAll acknowledges the server request frame f (a client acking on
// receipt) on connection id; it reports whether f was one.
func (r *pathRig) ackAll(id ConnID, f []byte) bool {
	m, err := codec.Decode(f, nil)
	if err != nil {
		return false
	}
	sr, ok := m.(*codec.ServerRequest)
	if !ok {
		return false
	}
	ack, _ := codec.Append(nil, &codec.ServerRequestAck{RequestID: sr.RequestID}, nil)
	r.inbox.Received(id, ack)
	return true
}

// BenchmarkFanOutThroughActors measures one command that emits its payload
// to 100 sessions: from the command's frame to every session's connection
// holding the notification, each acknowledged at once as a client does.
// -actors.one-by-one has the state machine report the notices one at a
// time, as before fsm.BatchObserver, for comparison in one build.
func BenchmarkFanOutThroughActors(b *testing.B) {
	const watchers = 100
	r := newPathRig(b)
	defer r.stop()
	chans := make([]<-chan []byte, watchers)
	for i := range chans {
		chans[i] = r.open(b, ConnID(i+1))
	}
	payload := append([]byte("F"), make([]byte, 99)...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := uint64(i + 1)
		frame, _ := codec.Append(nil, &codec.ClientRequest{RequestID: id, LowestPending: id, Payload: payload}, nil)
		r.inbox.Received(1, frame)
		for w, ch := range chans {
			for !r.ackAll(ConnID(w+1), <-ch) {
			}
		}
	}
}
