package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/transport"
)

func TestReorderManualTracksUnfinishedWork(t *testing.T) {
	o := newReorder(8, 2)
	sr := func(id uint64) ServerRequest { return ServerRequest{ID: id} }
	for _, id := range []uint64{1, 2, 3, 4} {
		o.offer(sr(id))
	}
	// The in-flight limit caps delivery; nothing is acknowledged on receipt.
	got := o.take(o.room())
	if len(got) != 2 || got[0].ID != 1 || got[1].ID != 2 || o.acked != 0 || o.room() != 0 {
		t.Fatalf("take = %v, acked %d, room %d", got, o.acked, o.room())
	}
	// A copy of a request still being worked on is neither delivered nor
	// acknowledged again.
	res := o.offer(sr(2))
	if _, held := o.held[2]; res != offerHeld || held || len(o.held) != 2 {
		t.Fatal("in-progress duplicate delivered again")
	}
	// Finishing 2 before 1 frees room but cannot be acknowledged yet.
	if o.markDone(2) || o.acked != 0 || o.room() != 1 {
		t.Fatalf("after done(2): acked %d, room %d", o.acked, o.room())
	}
	if !o.markDone(1) || o.acked != 2 || o.room() != 2 {
		t.Fatalf("after done(1): acked %d, room %d", o.acked, o.room())
	}
	// Marking done twice, or ids never delivered, changes nothing.
	if o.markDone(1) || o.markDone(3) || o.acked != 2 {
		t.Fatalf("repeated or undelivered done moved acked to %d", o.acked)
	}
	if o.offer(sr(1)) != offerDuplicate {
		t.Error("acknowledged id is not reported as a duplicate")
	}
	if got := o.take(o.room()); len(got) != 2 || got[0].ID != 3 {
		t.Fatalf("take after acks = %v", got)
	}
}

// ackTraffic reads the client's acknowledgements and keep-alives until n
// keep-alives arrived, and returns the highest id any of them acknowledged.
func ackTraffic(t *testing.T, srv *fakeServer, n int) uint64 {
	t.Helper()
	var high uint64
	for n > 0 {
		_, m := srv.next(t, codec.KindServerRequestAck, codec.KindKeepAlive)
		switch m := m.(type) {
		case *codec.ServerRequestAck:
			high = max(high, m.RequestID)
		case *codec.KeepAlive:
			high = max(high, m.AckedUpTo)
			n--
		}
	}
	return high
}

func TestManualAckAfterHandlerReturns(t *testing.T) {
	srv := newFakeServer(t)
	started := make(chan uint64, 4)
	release := make(chan struct{})
	dialT(t, []string{srv.addr()}, WithManualAck(4), WithServerRequestHandler(func(r ServerRequest) {
		started <- r.ID
		<-release
	}))
	id, _ := srv.next(t, codec.KindCreateSession)
	srv.send(id, &codec.ServerRequest{RequestID: 1, Payload: []byte("job")})
	select {
	case <-started:
	case <-time.After(waitLimit):
		t.Fatal("handler not called")
	}
	// While the handler runs, nothing is acknowledged: not by an ack, not
	// by keep-alives (three of them, 50 ms apart).
	if high := ackTraffic(t, srv, 3); high != 0 {
		t.Fatalf("request acknowledged (up to %d) before the handler returned", high)
	}
	// The server resends unacknowledged work; the Conn does not hand it to
	// the handler a second time.
	srv.send(id, &codec.ServerRequest{RequestID: 1, Payload: []byte("job")})
	close(release)
	for {
		_, m := srv.next(t, codec.KindServerRequestAck)
		if m.(*codec.ServerRequestAck).RequestID == 1 {
			break
		}
	}
	select {
	case n := <-started:
		t.Fatalf("request %d handed to the handler again", n)
	default:
	}
}

func TestManualAckInFlightLimitAndCumulativeOrder(t *testing.T) {
	srv := newFakeServer(t)
	ch := make(chan ServerRequest, 8)
	c := dialT(t, []string{srv.addr()}, WithManualAck(2), WithServerRequests(ch))
	id, _ := srv.next(t, codec.KindCreateSession)
	for n := uint64(1); n <= 3; n++ {
		srv.send(id, &codec.ServerRequest{RequestID: n, Payload: []byte{byte(n)}})
	}
	recv := func() ServerRequest {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-time.After(waitLimit):
			t.Fatal("no request delivered")
			return ServerRequest{}
		}
	}
	r1, r2 := recv(), recv()
	if r1.ID != 1 || r2.ID != 2 {
		t.Fatalf("delivered %d, %d", r1.ID, r2.ID)
	}
	// Two are unfinished, the limit: the third waits. Acknowledging 2
	// first frees room but acknowledges nothing (1 is not done).
	if err := r2.Ack(); err != nil {
		t.Fatal(err)
	}
	r3 := recv()
	if r3.ID != 3 {
		t.Fatalf("third delivered %d", r3.ID)
	}
	if high := ackTraffic(t, srv, 2); high != 0 {
		t.Fatalf("acknowledged up to %d while request 1 is unfinished", high)
	}
	if err := r1.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := r1.Ack(); err != nil {
		t.Fatalf("second Ack: %v", err)
	}
	for {
		_, m := srv.next(t, codec.KindServerRequestAck)
		if got := m.(*codec.ServerRequestAck).RequestID; got == 2 {
			break
		} else if got > 2 {
			t.Fatalf("acknowledged %d, request 3 is unfinished", got)
		}
	}
	_ = c.Close()
	// After Close the acknowledgement cannot be sent; the caller learns so.
	if err := r3.Ack(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close = %v, want ErrClosed", err)
	}
}

func TestManualAckOptionValidation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for name, opts := range map[string][]Option{
		"zero limit": {WithManualAck(0), WithServerRequestHandler(func(ServerRequest) {})},
		"no handler": {WithManualAck(4)},
	} {
		if _, err := Dial(ctx, []string{"127.0.0.1:1"}, opts...); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: Dial = %v, want ErrInvalidOption", name, err)
		}
	}
}

// In the default mode Ack is a no-op: the request was acknowledged on receipt.
func TestAckIsNoOpOnReceiptMode(t *testing.T) {
	srv := newFakeServer(t)
	ch := make(chan ServerRequest, 1)
	dialT(t, []string{srv.addr()}, WithServerRequests(ch))
	var id transport.ConnID
	id, _ = srv.next(t, codec.KindCreateSession)
	srv.send(id, &codec.ServerRequest{RequestID: 1})
	_, m := srv.next(t, codec.KindServerRequestAck)
	if m.(*codec.ServerRequestAck).RequestID != 1 {
		t.Fatal("not acknowledged on receipt")
	}
	if err := (<-ch).Ack(); err != nil {
		t.Fatalf("Ack = %v", err)
	}
}

// A request still being worked on when the connection drops is resent by the
// server after the session is continued; the Conn does not run it again and
// acknowledges it on the new connection once the handler returns.
func TestManualAckAcrossReconnect(t *testing.T) {
	srv := newFakeServer(t)
	started := make(chan uint64, 4)
	release := make(chan struct{})
	events := make(chan Event, 64)
	dialT(t, []string{srv.addr()}, WithEvents(events), WithManualAck(1), WithServerRequestHandler(func(r ServerRequest) {
		started <- r.ID
		<-release
	}))
	id, _ := srv.next(t, codec.KindCreateSession)
	srv.send(id, &codec.ServerRequest{RequestID: 1, Payload: []byte("job")})
	<-started
	if err := srv.router.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, EventReconnecting)
	id2, _ := srv.next(t, codec.KindContinueSession)
	waitEvent(t, events, EventConnected)
	// The server redelivers what is unacknowledged, as a node does on
	// continuation, and queues request 2 behind it.
	srv.send(id2, &codec.ServerRequest{RequestID: 1, Payload: []byte("job")})
	srv.send(id2, &codec.ServerRequest{RequestID: 2, Payload: []byte("next")})
	close(release)
	for {
		gotID, m := srv.next(t, codec.KindServerRequestAck)
		if m.(*codec.ServerRequestAck).RequestID >= 1 {
			if gotID != id2 {
				t.Fatalf("acknowledged on connection %v, want the new one %v", gotID, id2)
			}
			break
		}
	}
	select {
	case n := <-started:
		if n != 2 {
			t.Fatalf("handler got %d, want 2 (1 must not run twice)", n)
		}
	case <-time.After(waitLimit):
		t.Fatal("request 2 not delivered")
	}
}

// The in-flight limit is declared to the cluster as a capability (the name
// is fsm.CapMaxInFlight), in name order, replacing one the caller set.
func TestManualAckDeclaresInFlightLimit(t *testing.T) {
	srv := newFakeServer(t)
	dialT(t, []string{srv.addr()},
		WithManualAck(3),
		WithCapabilities(map[string]string{"role": "worker", "zz": "1", "zraft.max_in_flight": "99"}),
		WithServerRequestHandler(func(ServerRequest) {}))
	_, m := srv.next(t, codec.KindCreateSession)
	got := m.(*codec.CreateSession).Capabilities
	want := []codec.Capability{{Name: "role", Value: "worker"}, {Name: "zraft.max_in_flight", Value: "3"}, {Name: "zz", Value: "1"}}
	if len(got) != len(want) {
		t.Fatalf("capabilities %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("capabilities %v, want %v", got, want)
		}
	}
}
