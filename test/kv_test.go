package test

import (
	"bytes"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

func kvApp() fsm.Application {
	s, err := kv.New(kv.DefaultConfig())
	if err != nil {
		panic(err)
	}
	return s
}

// TestKVWatchDeliveredRedeliveredAndAcknowledged drives the built-in kv
// application's watch over the wire: each change of a watched key is a
// server-initiated request, resent after a reconnect until acknowledged,
// and not delivered again once acknowledged.
func TestKVWatchDeliveredRedeliveredAndAcknowledged(t *testing.T) {
	c := startAppCluster(t, nil, kvApp)
	l := c.leader(t)
	watcher := dial(t, l.ClientAddr())
	created, secret := watcher.createSession()
	writer := dial(t, l.ClientAddr())
	writer.createSession()

	if r, ok := writer.request(1, 1, string(kv.EncodeSet("color", []byte("red")))).(*codec.ClientResponse); !ok {
		t.Fatalf("set: %+v", r)
	}
	if r, ok := watcher.request(1, 1, string(kv.EncodeWatch("color"))).(*codec.ClientResponse); !ok {
		t.Fatalf("watch: %+v", r)
	}
	isSR := kindIs(codec.KindServerRequest)
	notification := func(w *wire) (uint64, kv.Notification) {
		t.Helper()
		sr := w.next(isSR).(*codec.ServerRequest)
		n, err := kv.DecodeNotification(sr.Payload)
		if err != nil {
			t.Fatal(err)
		}
		return sr.RequestID, n
	}
	// Watching a key that has a value sends the current value first.
	id1, n1 := notification(watcher)
	if id1 != 1 || n1.Key != "color" || !bytes.Equal(n1.Value, []byte("red")) {
		t.Fatalf("first notification %d %+v", id1, n1)
	}
	if r, ok := writer.request(2, 2, string(kv.EncodeSet("color", []byte("blue")))).(*codec.ClientResponse); !ok {
		t.Fatalf("set: %+v", r)
	}
	var id2 uint64
	var n2 kv.Notification
	for id2 <= id1 {
		id2, n2 = notification(watcher)
	}
	if id2 != 2 || !bytes.Equal(n2.Value, []byte("blue")) {
		t.Fatalf("second notification %d %+v", id2, n2)
	}

	// Reconnect without acknowledging: both are delivered again.
	watcher.close()
	w2 := dial(t, l.ClientAddr())
	if _, ok := w2.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
		t.Fatal("continue failed")
	}
	got := map[uint64]bool{}
	for len(got) < 2 {
		id, _ := notification(w2)
		got[id] = true
	}
	// Acknowledge both; after the acknowledgement is applied, a fresh
	// connection of the session receives nothing more.
	w2.send(&codec.ServerRequestAck{RequestID: 2})
	waitFor(t, "acknowledgement applied", func() bool {
		w3 := dial(t, l.ClientAddr())
		defer w3.close()
		if _, ok := w3.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
			return false
		}
		_, err := w3.nextWithin(800*time.Millisecond, isSR)
		return err != nil
	})
}

// Work queued while the session has no connection waits for the client and
// is delivered when it continues the session.
func TestServerRequestQueuedWhileDisconnectedIsDeliveredOnContinue(t *testing.T) {
	// The session must outlive the client's absence.
	c := startAppCluster(t, func(cfg *node.Config) { cfg.SessionTimeout = 30 * time.Second }, kvApp)
	l := c.leader(t)
	watcher := dial(t, l.ClientAddr())
	created, secret := watcher.createSession()
	if r, ok := watcher.request(1, 1, string(kv.EncodeWatch("k"))).(*codec.ClientResponse); !ok {
		t.Fatalf("watch: %+v", r)
	}
	watcher.close()
	writer := dial(t, l.ClientAddr())
	writer.createSession()
	if r, ok := writer.request(1, 1, string(kv.EncodeSet("k", []byte("while-away")))).(*codec.ClientResponse); !ok {
		t.Fatalf("set: %+v", r)
	}
	// Many redelivery intervals pass with no connection bound: more than
	// the supervisor's restart budget (10 in 10 s), so an actor that
	// crashed on each redelivery tick would be stopped for good.
	time.Sleep(15 * 300 * time.Millisecond)
	w2 := dial(t, l.ClientAddr())
	if m := w2.continueSession(created.SessionID, secret); m.Kind() != codec.KindSessionContinued {
		t.Fatalf("continue: %+v", m)
	}
	sr := w2.next(kindIs(codec.KindServerRequest)).(*codec.ServerRequest)
	n, err := kv.DecodeNotification(sr.Payload)
	if err != nil || n.Key != "k" || string(n.Value) != "while-away" {
		t.Fatalf("notification %+v, %v", n, err)
	}
	// The session still serves requests.
	if r, ok := w2.request(2, 2, string(kv.EncodeSet("other", []byte("x")))).(*codec.ClientResponse); !ok {
		t.Fatalf("request after continue: %+v", r)
	}
}
