package actors

import (
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/fsm"
)

// TestDispatcherRelaysACommandsNoticesInOneMessage: the notices of one
// applied command reach the directory as one DeliverBatch (work for each
// session gathered, in order), removals keep their place between the work
// before and after them, a follower relays nothing, and every notice's
// slot is given back.
func TestDispatcherRelaysACommandsNoticesInOneMessage(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	out := make(chan any, 64)
	sink := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *Deliver, *DeliverBatch, *SessionRemoved:
			out <- m
		case *LeaderQuery:
			// Its answer may arrive after the test's LeaderChanged.
			c.Respond(&LeaderChanged{LeaderID: 1, IsLeader: true})
		}
	}))
	keepalive := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	env := &Env{
		Settings: Settings{NodeID: 1, AckBatchInterval: time.Hour},
		Refs:     Refs{Sessions: sink, KeepAlive: keepalive, Raft: sink},
		Metrics:  NewMetrics(nil),
		Log:      slog.New(slog.DiscardHandler),
		Now:      time.Now,
	}
	obs := NewObserver(sys, nil, 100)
	d := sys.Root.Spawn(actor.PropsFromProducer(NewDispatcher(env, obs)))
	obs.dispatcher = d

	s1, s2, s3 := fsm.SessionID{15: 1}, fsm.SessionID{15: 2}, fsm.SessionID{15: 3}
	req := func(id uint64) fsm.ServerRequest { return fsm.ServerRequest{ID: id, Payload: []byte{byte(id)}} }
	list := []fsm.Notice{
		{Session: s1, Request: req(1)}, {Session: s2, Request: req(1)}, {Session: s1, Request: req(2)},
		{Session: s2, Removed: fsm.RemovedExpired},
		{Session: s3, Request: req(7)},
	}
	sys.Root.Send(d, &LeaderChanged{LeaderID: 1, IsLeader: true})
	obs.Notices(list)
	clear(list) // the machine reuses its list; the relay must not

	next := func() any {
		t.Helper()
		select {
		case m := <-out:
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("nothing relayed")
			return nil
		}
	}
	b, ok := next().(*DeliverBatch)
	if !ok || len(b.Delivers) != 2 || b.Delivers[0].Session != s1 || b.Delivers[1].Session != s2 ||
		len(b.Delivers[0].Reqs) != 2 || b.Delivers[0].Reqs[0].ID != 1 || b.Delivers[0].Reqs[1].ID != 2 ||
		len(b.Delivers[1].Reqs) != 1 || b.Delivers[1].Reqs[0].Payload[0] != 1 {
		t.Fatalf("first relay %#v, want s1 [1 2] and s2 [1] in one batch", b)
	}
	if r, ok := next().(*SessionRemoved); !ok || r.Session != s2 || r.Reason != fsm.RemovedExpired {
		t.Fatalf("second relay %#v, want s2's removal", r)
	}
	if dl, ok := next().(*Deliver); !ok || dl.Session != s3 || len(dl.Reqs) != 1 || dl.Reqs[0].ID != 7 {
		t.Fatalf("third relay %#v, want s3 [7]", dl)
	}

	// A follower relays no work.
	sys.Root.Send(d, &LeaderChanged{LeaderID: 2})
	obs.Notices([]fsm.Notice{{Session: s1, Request: req(3)}})
	deadline := time.Now().Add(5 * time.Second)
	for obs.Pending() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p := obs.Pending(); p != 0 {
		t.Fatalf("%d notice slots still held", p)
	}
	select {
	case m := <-out:
		t.Fatalf("a follower relayed %#v", m)
	case <-time.After(50 * time.Millisecond):
	}
	// Past the bound a command's notices are dropped whole.
	obs.Notices(make([]fsm.Notice, 101))
	if obs.Pending() != 0 || !obs.dropped.Load() {
		t.Fatalf("over the bound: %d pending, dropped %v", obs.Pending(), obs.dropped.Load())
	}
	_ = sys.Root.StopFuture(d).Wait()
}

// TestDispatcherKeepsOneAckProposalInFlight: acknowledgements that arrive
// while an AckServerRequests proposal is in flight wait for its outcome and
// then go together in one more, however many batch intervals pass; so a
// fan-out whose acks keep coming costs one entry per commit round.
func TestDispatcherKeepsOneAckProposalInFlight(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	proposals := make(chan *Propose, 16)
	raft := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *Propose:
			proposals <- m
		case *LeaderQuery:
			c.Respond(&LeaderChanged{LeaderID: 1, IsLeader: true})
		}
	}))
	env := &Env{
		Settings: Settings{NodeID: 1, AckBatchInterval: time.Millisecond, ProposalTimeout: time.Minute},
		Refs:     Refs{Raft: raft},
		Metrics:  NewMetrics(nil),
		Log:      slog.New(slog.DiscardHandler),
		Now:      time.Now,
	}
	d := sys.Root.Spawn(actor.PropsFromProducer(NewDispatcher(env, NewObserver(sys, nil, 10))))
	sys.Root.Send(d, &LeaderChanged{LeaderID: 1, IsLeader: true})
	s := func(n byte) fsm.SessionID { return fsm.SessionID{15: n} }
	acksOf := func(p *Propose) []fsm.Ack {
		t.Helper()
		cmd, err := fsm.DecodeCommand(p.Cmd)
		a, ok := cmd.(fsm.AckServerRequests)
		if err != nil || !ok {
			t.Fatalf("proposal %T %v", cmd, err)
		}
		return a.Acks
	}
	next := func() *Propose {
		t.Helper()
		select {
		case p := <-proposals:
			return p
		case <-time.After(5 * time.Second):
			t.Fatal("no proposal")
			return nil
		}
	}
	sys.Root.Send(d, &Acked{Session: s(1), UpTo: 3})
	first := next()
	if a := acksOf(first); len(a) != 1 || a[0] != (fsm.Ack{Session: s(1), UpTo: 3}) {
		t.Fatalf("first proposal %v", a)
	}
	sys.Root.Send(d, &Acked{Session: s(2), UpTo: 1})
	sys.Root.Send(d, &Acked{Session: s(3), UpTo: 5})
	sys.Root.Send(d, &Acked{Session: s(2), UpTo: 2})
	select {
	case p := <-proposals:
		t.Fatalf("a second proposal %v while the first is in flight", acksOf(p))
	case <-time.After(50 * time.Millisecond): // 50 batch intervals
	}
	sys.Root.Send(first.ReplyTo, &Proposed{Tag: first.Tag})
	if a := acksOf(next()); len(a) != 2 || a[0] != (fsm.Ack{Session: s(2), UpTo: 2}) || a[1] != (fsm.Ack{Session: s(3), UpTo: 5}) {
		t.Fatalf("second proposal %v, want s2 up to 2 and s3 up to 5", a)
	}
	_ = sys.Root.StopFuture(d).Wait()
}
