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

// TestKVWatchNotifiedOverTheWire drives the built-in kv application's
// watch over the wire: the watch answers the key's current state, each
// change of the watched key arrives as a Notification frame (not a server
// request) carrying the key's previous revision, the client sends nothing
// back, and a reconnected session is not sent the old notifications again
// (notifications are not replicated; the client re-reads instead).
func TestKVWatchNotifiedOverTheWire(t *testing.T) {
	c := startAppCluster(t, nil, kvApp)
	l := c.leader(t)
	watcher := dial(t, l.ClientAddr())
	created, secret := watcher.createSession()
	writer := dial(t, l.ClientAddr())
	writer.createSession()

	if r, ok := writer.request(1, 1, string(kv.EncodeSet("color", []byte("red")))).(*codec.ClientResponse); !ok {
		t.Fatalf("set: %+v", r)
	}
	r, ok := watcher.request(1, 1, string(kv.EncodeWatch("color"))).(*codec.ClientResponse)
	if !ok {
		t.Fatalf("watch: %+v", r)
	}
	if wr, err := kv.DecodeWatchResult(r.Result); err != nil || !wr.Exists || wr.Revision != 1 || !bytes.Equal(wr.Value, []byte("red")) {
		t.Fatalf("watch result %+v, %v; want red at 1", wr, err)
	}
	isNote := kindIs(codec.KindNotification)
	if r, ok := writer.request(2, 2, string(kv.EncodeSet("color", []byte("blue")))).(*codec.ClientResponse); !ok {
		t.Fatalf("set: %+v", r)
	}
	m := watcher.next(isNote).(*codec.Notification)
	n, err := kv.DecodeNotification(m.Payload)
	if err != nil || m.Flags != 0 || n.Key != "color" || !bytes.Equal(n.Value, []byte("blue")) || n.Revision != 2 || n.PrevRevision != 1 {
		t.Fatalf("notification %+v (flags %#x), %v; want blue at 2 after 1", n, m.Flags, err)
	}

	// Reconnect: nothing is sent again (the client re-reads with watch).
	watcher.close()
	w2 := dial(t, l.ClientAddr())
	if _, ok := w2.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
		t.Fatal("continue failed")
	}
	if m, err := w2.nextWithin(500*time.Millisecond, func(m codec.Message) bool {
		return m.Kind() == codec.KindNotification || m.Kind() == codec.KindServerRequest
	}); err == nil {
		t.Fatalf("after reconnecting: %+v", m)
	}
	// The watch survived: the next change arrives on the new connection.
	if r, ok := writer.request(3, 3, string(kv.EncodeDelete("color"))).(*codec.ClientResponse); !ok {
		t.Fatalf("delete: %+v", r)
	}
	n, err = kv.DecodeNotification(w2.next(isNote).(*codec.Notification).Payload)
	if err != nil || !n.Deleted || n.Revision != 3 || n.PrevRevision != 2 {
		t.Fatalf("notification %+v, %v; want deleted at 3 after 2", n, err)
	}
}

// Work the client has not acknowledged waits in the replicated state while
// the session has no connection and is delivered when it continues the
// session. (Before watches became notifications this test queued a kv
// watch's notification while disconnected; the counter application's
// emit queues a server request instead.)
func TestServerRequestQueuedWhileDisconnectedIsDeliveredOnContinue(t *testing.T) {
	// The session must outlive the client's absence.
	c := startCluster(t, func(cfg *node.Config) { cfg.SessionTimeout = 30 * time.Second })
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, secret := w.createSession()
	// emit:1 queues one server request for the session itself; the
	// client leaves without acknowledging it.
	if r, ok := w.request(1, 1, "emit:1").(*codec.ClientResponse); !ok {
		t.Fatalf("emit: %+v", r)
	}
	w.close()
	// Many redelivery intervals pass with no connection bound: more than
	// the supervisor's restart budget (10 in 10 s), so an actor that
	// crashed on each redelivery tick would be stopped for good.
	time.Sleep(15 * 300 * time.Millisecond)
	w2 := dial(t, l.ClientAddr())
	if m := w2.continueSession(created.SessionID, secret); m.Kind() != codec.KindSessionContinued {
		t.Fatalf("continue: %+v", m)
	}
	sr := w2.next(kindIs(codec.KindServerRequest)).(*codec.ServerRequest)
	if sr.RequestID != 1 || string(sr.Payload) != "work-0" {
		t.Fatalf("server request %+v", sr)
	}
	// The session still serves requests.
	if r, ok := w2.request(2, 2, "incr").(*codec.ClientResponse); !ok {
		t.Fatalf("request after continue: %+v", r)
	}
}
