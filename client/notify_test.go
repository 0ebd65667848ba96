package client

import (
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
)

func nextNote(t *testing.T, ch <-chan Notification) Notification {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(waitLimit):
		t.Fatal("no notification")
		return Notification{}
	}
}

// Notifications reach the handler in arrival order with their payloads;
// the node's lost flag is passed on; a continuation of the session (the
// connection was lost) hands the handler a Lost marker, since what was sent
// meanwhile went nowhere.
func TestNotificationsDeliveredAndLostAfterContinuation(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(standard)
	got := make(chan Notification, 16)
	dialT(t, []string{srv.addr()}, WithNotificationHandler(func(n Notification) { got <- n }))
	id, _ := srv.next(t, codec.KindCreateSession)
	srv.send(id, &codec.Notification{Payload: []byte("a")})
	srv.send(id, &codec.Notification{Payload: []byte("b")})
	srv.send(id, &codec.Notification{Flags: codec.NotificationLost})
	for _, want := range []Notification{{Payload: []byte("a")}, {Payload: []byte("b")}, {Lost: true}} {
		if n := nextNote(t, got); string(n.Payload) != string(want.Payload) || n.Lost != want.Lost {
			t.Fatalf("notification %+v, want %+v", n, want)
		}
	}
	// The server drops the connection; the client continues the session.
	if err := srv.router.CloseConn(id); err != nil {
		t.Fatal(err)
	}
	id2, _ := srv.next(t, codec.KindContinueSession)
	if n := nextNote(t, got); !n.Lost || len(n.Payload) != 0 {
		t.Fatalf("after continuing: %+v, want a Lost marker", n)
	}
	srv.send(id2, &codec.Notification{Payload: []byte("c")})
	if n := nextNote(t, got); n.Lost || string(n.Payload) != "c" {
		t.Fatalf("after the marker: %+v, want c", n)
	}
}

// A notification that does not fit the buffer is dropped, and the handler
// is then told (Lost) rather than left believing it saw everything.
func TestNotificationBufferOverflowMarksLost(t *testing.T) {
	srv := newFakeServer(t)
	srv.setRespond(sessionOnly)
	gate := make(chan struct{})
	got := make(chan Notification, 16)
	c := dialT(t, []string{srv.addr()}, WithNotificationBuffer(1), WithNotificationHandler(func(n Notification) {
		<-gate
		got <- n
	}))
	defer close(gate)
	cl := c.Go([]byte("x"))
	id, m := srv.next(t, codec.KindClientRequest)
	for _, p := range []string{"1", "2", "3", "4", "5", "6"} {
		srv.send(id, &codec.Notification{Payload: []byte(p)})
	}
	// Answered after the notifications: once the call completes, the
	// client's loop has handled them all (one connection, in order), with
	// the handler held on the first and room for one more.
	srv.send(id, &codec.ClientResponse{RequestID: m.(*codec.ClientRequest).RequestID})
	waitCall(t, cl)
	gate <- struct{}{} // the first
	gate <- struct{}{} // the buffered one
	var seen []Notification
	for range 2 {
		seen = append(seen, nextNote(t, got))
	}
	if string(seen[0].Payload) != "1" || seen[0].Lost || string(seen[1].Payload) != "2" || seen[1].Lost {
		t.Fatalf("first two %+v", seen)
	}
	// 3 to 6 were dropped: the handler is told next, with a marker.
	gate <- struct{}{}
	if n := nextNote(t, got); !n.Lost || len(n.Payload) != 0 {
		t.Fatalf("after the drops: %+v, want a Lost marker", n)
	}
}
