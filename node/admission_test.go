package node

import (
	"testing"
	"time"

	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/supervision"
)

// Issue 10: the inbox's admission counter is released by the actor that
// handles each frame, so frames left in the mailbox of an actor its
// supervisor stopped (past its restart limit), or sent to it while it was
// gone, used to hold their slots for ever; after max_inbox such leaks the
// node dropped every frame. The root now reconciles the counter when it
// starts the actor afresh (holding off the transport's posts meanwhile:
// protoactor loses or races a message that reaches a mailbox still being
// set up).
func TestInboxAdmissionDoesNotLeakWhenActorStopped(t *testing.T) {
	faults := supervision.NewFaults()
	c := startTestCluster(t, nil, WithFaultInjection(faults))
	n := c.Leader()
	frame, err := codec.Encode(&codec.Query{CorrelationID: 1, Payload: []byte("count")})
	if err != nil {
		t.Fatal(err)
	}
	// One more panic than the restart limit: the directory is stopped and
	// started afresh while frames keep arriving. Only this test's frames
	// fault, so that every panic is the leader's (the faults are shared by
	// the members, whose directories also get timer ticks).
	faults.PanicOn("sessions", supervision.DefaultLimits().MaxRestarts+1, testFrame)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200000 && faults.Fired("sessions") <= supervision.DefaultLimits().MaxRestarts; i++ {
			n.inbox.Received(actors.ConnID(1<<40+i%64), frame)
		}
		// Load continues past the stop, while the actor is gone and
		// once it is back.
		for i := range 20000 {
			n.inbox.Received(actors.ConnID(1<<40+i%64), frame)
		}
	}()
	<-done
	if got := faults.Fired("sessions"); got <= supervision.DefaultLimits().MaxRestarts {
		t.Fatalf("only %d faults fired; the directory was not stopped", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if f, _ := n.inbox.Pending(); f <= 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f, b := n.inbox.Pending(); f > 0 || b > 0 {
		t.Fatalf("%d inbox slots (%d bytes) still held after the load ended: leaked by the stopped actor", f, b)
	}
}

// testFrame matches the frames these tests post (connection ids from 1<<40).
func testFrame(msg any) bool {
	in, ok := msg.(*actors.Inbound)
	return ok && in.Conn >= 1<<40
}

// A panic below the restart limit restarts the directory, and protoactor
// does not deliver the message it panicked on again: the supervisor gives
// back that message's admission, so restarts alone leak nothing either.
func TestInboxAdmissionDoesNotLeakWhenActorRestarts(t *testing.T) {
	faults := supervision.NewFaults()
	c := startTestCluster(t, nil, WithFaultInjection(faults))
	n := c.Leader()
	frame, err := codec.Encode(&codec.Query{CorrelationID: 1, Payload: []byte("count")})
	if err != nil {
		t.Fatal(err)
	}
	const panics = 5 // below the restart limit: restarts, no stop
	faults.PanicOn("sessions", panics, testFrame)
	for i := 0; i < 200000 && faults.Fired("sessions") < panics; i++ {
		n.inbox.Received(actors.ConnID(1<<40+i%64), frame)
	}
	if got := faults.Fired("sessions"); got != panics {
		t.Fatalf("%d faults fired, want %d", got, panics)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if f, b := n.inbox.Pending(); f == 0 && b == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	f, b := n.inbox.Pending()
	t.Fatalf("%d inbox slots (%d bytes) still held after %d restarts: the panicking frames leaked", f, b, panics)
}

// The same for the state machine's observer, whose notices the dispatcher
// releases: stopping the dispatcher under load leaks no slots.
func TestObserverAdmissionDoesNotLeakWhenDispatcherStopped(t *testing.T) {
	faults := supervision.NewFaults()
	c := startTestCluster(t, nil, WithFaultInjection(faults))
	n := c.Leader()
	limit := supervision.DefaultLimits().MaxRestarts
	faults.PanicOn("dispatcher", limit+1, nil)
	for i := 0; i < 200000 && faults.Fired("dispatcher") <= limit; i++ {
		n.observer.ServerRequestAdded(fsm.SessionID{15: byte(i % 64)}, fsm.ServerRequest{ID: uint64(i + 1)})
	}
	for i := range 20000 {
		n.observer.ServerRequestAdded(fsm.SessionID{15: byte(i % 64)}, fsm.ServerRequest{ID: uint64(i + 1)})
	}
	if got := faults.Fired("dispatcher"); got <= limit {
		t.Fatalf("only %d faults fired; the dispatcher was not stopped", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n.observer.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p := n.observer.Pending(); p > 0 {
		t.Fatalf("%d observer slots still held after the load ended: leaked by the stopped dispatcher", p)
	}
}
