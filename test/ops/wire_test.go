package ops

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/transport"
)

// wire is a raw protocol connection (codec over transport), for what the
// Go client does not expose: a session's secret, kept by the application
// to continue the session from anywhere, and exact request ids.
type wire struct {
	t    *testing.T
	conn *transport.Conn
	in   chan codec.Message
	done chan struct{}
}

func dialWire(t *testing.T, addr string) *wire {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := transport.Dial(ctx, addr, transport.DefaultDialConfig())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	w := &wire{t: t, conn: conn, in: make(chan codec.Message, 1024), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.in)
		for {
			f, err := conn.Recv()
			if err != nil {
				return
			}
			m, err := codec.Decode(f, nil)
			if err != nil {
				t.Errorf("undecodable frame from %s: %v", addr, err)
				return
			}
			select {
			case w.in <- m:
			default:
				t.Errorf("raw client inbox overflow")
				return
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *wire) close() {
	_ = w.conn.Close()
	<-w.done
}

func (w *wire) send(m codec.Message) {
	w.t.Helper()
	f, err := codec.Encode(m)
	if err != nil {
		w.t.Fatalf("encode %v: %v", m.Kind(), err)
	}
	if err := w.conn.Send(f); err != nil {
		w.t.Fatalf("send: %v", err)
	}
}

// next returns the next message match accepts (skipping others), or fails
// the test after 15 s.
func (w *wire) next(match func(codec.Message) bool) codec.Message {
	w.t.Helper()
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-w.in:
			if !ok {
				w.t.Fatal("connection closed")
			}
			if match(m) {
				return m
			}
		case <-timer.C:
			w.t.Fatal("no answer within 15 s")
		}
	}
}

func newSecret(t *testing.T) codec.Secret {
	var s codec.Secret
	if _, err := rand.Read(s[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

// createSession creates a session and returns its id.
func (w *wire) createSession(secret codec.Secret) codec.SessionID {
	w.t.Helper()
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	w.send(&codec.CreateSession{Nonce: binary.BigEndian.Uint64(nonce[:]), Secret: secret})
	m := w.next(func(m codec.Message) bool {
		return m.Kind() == codec.KindSessionCreated || m.Kind() == codec.KindSessionRejected
	})
	created, ok := m.(*codec.SessionCreated)
	if !ok {
		w.t.Fatalf("CreateSession: %+v", m)
	}
	return created.SessionID
}

// continueSession binds session id to this connection; it returns the
// answer (SessionContinued or SessionRejected).
func (w *wire) continueSession(id codec.SessionID, secret codec.Secret) codec.Message {
	w.t.Helper()
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	w.send(&codec.ContinueSession{SessionID: id, Secret: secret, Nonce: binary.BigEndian.Uint64(nonce[:])})
	return w.next(func(m codec.Message) bool {
		return m.Kind() == codec.KindSessionContinued || m.Kind() == codec.KindSessionRejected
	})
}

// incr sends request id (kv incr of key) and returns the counter value the
// cluster answered.
func (w *wire) incr(id uint64, key string) int64 {
	w.t.Helper()
	w.send(&codec.ClientRequest{RequestID: id, LowestPending: id, Payload: kv.EncodeIncr(key, 1)})
	m := w.next(func(m codec.Message) bool {
		switch r := m.(type) {
		case *codec.ClientResponse:
			return r.RequestID == id
		case *codec.RequestError:
			return r.RequestID == id
		case *codec.SessionClosed:
			return true
		}
		return false
	})
	r, ok := m.(*codec.ClientResponse)
	if !ok {
		w.t.Fatalf("request %d: %+v", id, m)
	}
	v, err := kv.DecodeIncrResult(r.Result)
	if err != nil {
		w.t.Fatalf("request %d: %v", id, err)
	}
	return v
}

func (w *wire) String() string { return fmt.Sprint(w.conn.RemoteAddr()) }
