package actors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/zraft/zraft/fsm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRaft answers reads with the query itself; a round blocks until
// release is closed (when set), so tests can hold rounds open. It appends
// every command to log when it is queued (Start) or, for Propose, when the
// call gets to it; jitter, when set, delays that by up to jitter, as the
// scheduler may delay a goroutine between taking a batch and queuing it.
type fakeRaft struct {
	mu        sync.Mutex
	proposals int
	rounds    [][]any
	release   chan struct{}
	log       [][]byte
	jitter    time.Duration
	// waiting counts proposals being waited for; maxWaiting is its peak.
	waiting, maxWaiting int
}

func (f *fakeRaft) queue(cmd []byte) {
	if f.jitter > 0 {
		time.Sleep(time.Duration(rand.Int64N(int64(f.jitter))))
	}
	f.mu.Lock()
	f.proposals++
	f.log = append(f.log, cmd)
	f.mu.Unlock()
}

// Propose answers a ClientRequest with its payload, and a Batch with each
// request's payload in order, as the state machine would lay them out.
func (f *fakeRaft) Propose(ctx context.Context, cmd []byte) (uint64, []byte, error) {
	f.queue(cmd)
	return f.result(cmd)
}

// fakeProposal is a queued command; Wait answers as Propose does.
type fakeProposal struct {
	f   *fakeRaft
	cmd []byte
}

func (p fakeProposal) Wait(ctx context.Context) (uint64, []byte, error) {
	p.f.mu.Lock()
	p.f.waiting++
	p.f.maxWaiting = max(p.f.maxWaiting, p.f.waiting)
	p.f.mu.Unlock()
	if p.f.jitter > 0 {
		time.Sleep(time.Duration(rand.Int64N(int64(p.f.jitter))))
	}
	p.f.mu.Lock()
	p.f.waiting--
	p.f.mu.Unlock()
	return p.f.result(p.cmd)
}

func (f *fakeRaft) Start(ctx context.Context, cmd []byte) (Proposal, error) {
	f.queue(cmd)
	return fakeProposal{f: f, cmd: cmd}, nil
}

func (f *fakeRaft) result(cmd []byte) (uint64, []byte, error) {
	c, err := fsm.DecodeCommand(cmd)
	if err != nil {
		return 0, nil, err
	}
	switch c := c.(type) {
	case fsm.ClientRequest:
		return uint64(fsm.StatusOK), c.Payload, nil
	case fsm.Batch:
		var data []byte
		for _, q := range c.Requests {
			data = binary.AppendUvarint(data, uint64(fsm.StatusOK))
			data = binary.AppendUvarint(data, uint64(len(q.Payload)))
			data = append(data, q.Payload...)
		}
		return uint64(fsm.StatusBatch), data, nil
	}
	return 0, cmd, nil
}
func (f *fakeRaft) Read(ctx context.Context, q any) (any, error) { return q, nil }
func (f *fakeRaft) ReadBatch(ctx context.Context, qs []any) ([]any, []error, error) {
	f.mu.Lock()
	f.rounds = append(f.rounds, append([]any(nil), qs...))
	rel := f.release
	f.mu.Unlock()
	if rel != nil {
		select {
		case <-rel:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
	return qs, make([]error, len(qs)), nil
}
func (f *fakeRaft) StaleRead(q any) (any, error)           { return q, nil }
func (f *fakeRaft) TransferLeadership(target uint64) error { return nil }

// collector is an actor that forwards every ReadDone/Proposed to a channel.
func collector(t *testing.T, sys *actor.ActorSystem, out chan<- any) *actor.PID {
	t.Helper()
	return sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *ReadDone, *Proposed:
			out <- m
		}
	}))
}

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}), actor.WithDeadLetterThrottleInterval(10*time.Millisecond))
}

func TestWorkBatchesReadsAndAnswersEach(t *testing.T) {
	sys := quietSystem()
	raft := &fakeRaft{}
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWork(ctx, raft, 100, time.Second, NewMetrics(nil), nil)
	out := make(chan any, 100)
	pid := collector(t, sys, out)
	for i := 0; i < 50; i++ {
		w.Read(sys, i, false, pid, i)
	}
	got := map[int]bool{}
	for i := 0; i < 50; i++ {
		select {
		case m := <-out:
			d := m.(*ReadDone)
			if d.Err != nil || d.Result != d.Tag {
				t.Fatalf("read %v answered %v, %v", d.Tag, d.Result, d.Err)
			}
			got[d.Tag.(int)] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 50 reads answered", len(got))
		}
	}
	raft.mu.Lock()
	rounds := len(raft.rounds)
	raft.mu.Unlock()
	if rounds == 0 || rounds > 50 {
		t.Fatalf("%d rounds for 50 reads", rounds)
	}
	if w.InFlight() != 0 {
		t.Fatalf("in flight after all answers: %d", w.InFlight())
	}
	cancel()
	w.Wait()
	sys.Root.Stop(pid)
}

func TestWorkRefusesPastItsBoundAndFailsQueuedReadsOnClose(t *testing.T) {
	sys := quietSystem()
	raft := &fakeRaft{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWork(ctx, raft, 3, time.Minute, NewMetrics(nil), nil)
	out := make(chan any, 100)
	pid := collector(t, sys, out)
	// Fill the bound with reads that stay in flight (their rounds block).
	for i := 0; i < 3; i++ {
		w.Read(sys, i, false, pid, i)
	}
	w.Read(sys, 99, false, pid, 99)
	w.Propose(sys, []byte("x"), pid, "p")
	for i := 0; i < 2; i++ {
		select {
		case m := <-out:
			switch d := m.(type) {
			case *ReadDone:
				if d.Tag != 99 || !errors.Is(d.Err, ErrOverloaded) {
					t.Fatalf("read past the bound: %+v", d)
				}
			case *Proposed:
				if !errors.Is(d.Err, ErrOverloaded) {
					t.Fatalf("proposal past the bound: %+v", d)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatal("calls past the bound were not refused")
		}
	}
	// Closing answers everything still waiting, and Wait returns.
	cancel()
	w.Wait()
	for i := 0; i < 3; i++ {
		select {
		case m := <-out:
			if d := m.(*ReadDone); !errors.Is(d.Err, ErrUnavailable) {
				t.Fatalf("read during close: %+v", d)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("reads in flight at close were not answered")
		}
	}
	sys.Root.Stop(pid)
}

func TestWorkBatchesClientRequestsAndAnswersEachWithItsOwnResult(t *testing.T) {
	sys := quietSystem()
	raft := &fakeRaft{}
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWork(ctx, raft, 1000, time.Second, NewMetrics(nil), nil)
	out := make(chan any, 200)
	pid := collector(t, sys, out)
	const n = 200
	for i := 0; i < n; i++ {
		w.ProposeRequest(sys, fsm.ClientRequest{Session: fsm.SessionID{1}, RequestID: uint64(i + 1), LowestPending: 1,
			Payload: []byte(fmt.Sprint(i))}, pid, i)
	}
	for i := 0; i < n; i++ {
		select {
		case m := <-out:
			p := m.(*Proposed)
			if p.Err != nil || fsm.Status(p.Value) != fsm.StatusOK || string(p.Data) != fmt.Sprint(p.Tag) {
				t.Fatalf("request %v answered %v %q %v", p.Tag, fsm.Status(p.Value), p.Data, p.Err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d requests answered", i, n)
		}
	}
	raft.mu.Lock()
	proposals := raft.proposals
	raft.mu.Unlock()
	if proposals == 0 || proposals >= n {
		t.Fatalf("%d proposals for %d queued requests: not batched", proposals, n)
	}
	cancel()
	w.Wait()
	sys.Root.Stop(pid)
}

// panicRaft panics in every call, as a broken dependency would.
type panicRaft struct{ fakeRaft }

func (p *panicRaft) Propose(context.Context, []byte) (uint64, []byte, error)  { panic("boom") }
func (p *panicRaft) Start(context.Context, []byte) (Proposal, error)          { panic("boom") }
func (p *panicRaft) ReadBatch(context.Context, []any) ([]any, []error, error) { panic("boom") }

func TestWorkRecoversPanicsAndAnswersCallers(t *testing.T) {
	sys := quietSystem()
	ctx, cancel := context.WithCancel(context.Background())
	m := NewMetrics(nil)
	w := NewWork(ctx, &panicRaft{}, 10, time.Second, m, nil)
	out := make(chan any, 10)
	pid := collector(t, sys, out)
	w.ProposeRequest(sys, fsm.ClientRequest{Session: fsm.SessionID{1}, RequestID: 1, LowestPending: 1}, pid, "req")
	w.Read(sys, "q", false, pid, "read")
	w.Propose(sys, []byte("x"), pid, "prop")
	for i := 0; i < 3; i++ {
		select {
		case msg := <-out:
			var err error
			var tag any
			switch d := msg.(type) {
			case *ReadDone:
				err, tag = d.Err, d.Tag
			case *Proposed:
				err, tag = d.Err, d.Tag
			}
			if !errors.Is(err, ErrInternal) || tag == nil {
				t.Fatalf("caller (tag %v) got %v, want ErrInternal with its tag", tag, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a caller was not answered after a panic")
		}
	}
	if w.InFlight() != 0 {
		t.Fatalf("%d calls still counted in flight", w.InFlight())
	}
	cancel()
	w.Wait()
	sys.Root.Stop(pid)
}

// TestWorkKeepsASessionsRequestsInArrivalOrder checks that one session's
// requests enter the log in the order its actor handed them to Work, while
// proposeRounds batch servers run at once: taking a batch and queuing it in
// Raft is one step. (Issue 8: with each server calling a synchronous
// Propose, batches formed in order could enter the log in another.)
func TestWorkKeepsASessionsRequestsInArrivalOrder(t *testing.T) {
	sys := quietSystem()
	raft := &fakeRaft{jitter: 200 * time.Microsecond}
	ctx, cancel := context.WithCancel(context.Background())
	const n = 3000
	w := NewWork(ctx, raft, n, 5*time.Second, NewMetrics(nil), nil)
	out := make(chan any, n)
	pid := collector(t, sys, out)
	for i := 1; i <= n; i++ {
		w.ProposeRequest(sys, fsm.ClientRequest{Session: fsm.SessionID{1}, RequestID: uint64(i), LowestPending: 1,
			Payload: []byte(fmt.Sprint(i))}, pid, i)
		if i%7 == 0 {
			time.Sleep(20 * time.Microsecond) // let batches form while others are in flight
		}
	}
	for i := 0; i < n; i++ {
		select {
		case m := <-out:
			if p := m.(*Proposed); p.Err != nil {
				t.Fatalf("request %v: %v", p.Tag, p.Err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d requests answered", i, n)
		}
	}
	cancel()
	w.Wait()
	sys.Root.Stop(pid)

	raft.mu.Lock()
	defer raft.mu.Unlock()
	var ids []uint64
	for _, cmd := range raft.log {
		c, err := fsm.DecodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		switch c := c.(type) {
		case fsm.ClientRequest:
			ids = append(ids, c.RequestID)
		case fsm.Batch:
			for _, q := range c.Requests {
				ids = append(ids, q.RequestID)
			}
		}
	}
	if len(raft.log) < 2*proposeRounds {
		t.Fatalf("only %d batches: too few to overlap", len(raft.log))
	}
	if raft.maxWaiting < 2 {
		t.Fatalf("at most %d batch in flight at once: ordering must not cost the pipelining", raft.maxWaiting)
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("log position %d holds request %d (%d batches): out of arrival order", i, id, len(raft.log))
		}
	}
}
