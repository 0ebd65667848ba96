package client

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/transport"
)

// waitLimit bounds every wait in these tests; reaching it is a failure, not
// a timing assertion.
const waitLimit = 10 * time.Second

type srvEventKind int

const (
	evOpened srvEventKind = iota
	evMsg
	evClosed
)

type srvEvent struct {
	kind srvEventKind
	id   transport.ConnID
	msg  codec.Message
}

// responder decides a fake server's replies to one message. It runs on the
// transport's goroutine and must not block.
type responder func(s *fakeServer, id transport.ConnID, m codec.Message) []codec.Message

// fakeServer is a scripted zraft node built on transport.Listen: it records
// everything it receives and answers through a replaceable responder.
type fakeServer struct {
	t       testing.TB
	router  *transport.Router
	events  chan srvEvent
	opened  atomic.Int64
	quiet   atomic.Bool // stop recording, for benchmarks
	mu      sync.Mutex
	respond responder

	sid     codec.SessionID
	ka      time.Duration
	timeout time.Duration
	members []codec.Member
}

func newFakeServer(t testing.TB) *fakeServer {
	t.Helper()
	return newFakeServerConfig(t, transport.DefaultRouterConfig())
}

func newFakeServerConfig(t testing.TB, cfg transport.RouterConfig) *fakeServer {
	t.Helper()
	s := &fakeServer{
		t:       t,
		events:  make(chan srvEvent, 4096),
		ka:      50 * time.Millisecond,
		timeout: 5 * time.Second,
		respond: standard,
	}
	s.sid[0] = 0x5E
	r, err := transport.Listen(cfg, s)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s.router = r
	t.Cleanup(func() { _ = r.Close() })
	return s
}

func (s *fakeServer) addr() string { return s.router.Addr().String() }

func (s *fakeServer) setRespond(r responder) {
	s.mu.Lock()
	s.respond = r
	s.mu.Unlock()
}

func (s *fakeServer) push(ev srvEvent) {
	if s.quiet.Load() {
		return
	}
	select {
	case s.events <- ev:
	default:
		s.t.Errorf("fake server event buffer full")
	}
}

// Opened implements transport.Handler.
func (s *fakeServer) Opened(id transport.ConnID, _ net.Addr) {
	s.opened.Add(1)
	s.push(srvEvent{kind: evOpened, id: id})
}

// Received implements transport.Handler.
func (s *fakeServer) Received(id transport.ConnID, frame []byte) {
	m, err := codec.Decode(frame, nil)
	if err != nil {
		s.t.Errorf("fake server: client sent an undecodable frame: %v", err)
		return
	}
	s.push(srvEvent{kind: evMsg, id: id, msg: m})
	s.mu.Lock()
	r := s.respond
	s.mu.Unlock()
	if r == nil {
		return
	}
	for _, reply := range r(s, id, m) {
		s.send(id, reply)
	}
}

// Closed implements transport.Handler.
func (s *fakeServer) Closed(id transport.ConnID, _ error) {
	s.push(srvEvent{kind: evClosed, id: id})
}

func (s *fakeServer) send(id transport.ConnID, m codec.Message) {
	frame, err := codec.Encode(m)
	if err != nil {
		s.t.Errorf("fake server: encode %v: %v", m.Kind(), err)
		return
	}
	// The connection may be gone already; tests that care wait for the
	// effect instead.
	_ = s.router.Send(id, frame)
}

// next returns the next message of one of kinds, skipping other messages and
// connection events; it fails the test after waitLimit.
func (s *fakeServer) next(t testing.TB, kinds ...codec.Kind) (transport.ConnID, codec.Message) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		select {
		case ev := <-s.events:
			if ev.kind != evMsg {
				continue
			}
			for _, k := range kinds {
				if ev.msg.Kind() == k {
					return ev.id, ev.msg
				}
			}
		case <-deadline.C:
			t.Fatalf("fake server %s: no %v within %v", s.addr(), kinds, waitLimit)
			return 0, nil
		}
	}
}

// standard answers like a healthy leader: it creates and continues the
// session, answers keep-alives and echoes commands and queries.
func standard(s *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
	if r := sessionOnly(s, 0, m); r != nil {
		return r
	}
	switch m := m.(type) {
	case *codec.ClientRequest:
		return []codec.Message{&codec.ClientResponse{RequestID: m.RequestID, Result: m.Payload}}
	case *codec.Query:
		return []codec.Message{&codec.QueryResponse{CorrelationID: m.CorrelationID, Result: m.Payload}}
	}
	return nil
}

// sessionOnly answers session handshakes and keep-alives and nothing else,
// so that a test scripts commands and queries itself.
func sessionOnly(s *fakeServer, _ transport.ConnID, m codec.Message) []codec.Message {
	switch m := m.(type) {
	case *codec.CreateSession:
		return []codec.Message{&codec.SessionCreated{
			SessionID: s.sid, Nonce: m.Nonce, KeepAliveInterval: s.ka, SessionTimeout: s.timeout,
			LeaderID: 1, Members: s.members,
		}}
	case *codec.ContinueSession:
		return []codec.Message{&codec.SessionContinued{Nonce: m.Nonce}}
	case *codec.KeepAlive:
		return []codec.Message{&codec.KeepAliveResponse{Timestamp: m.Timestamp}}
	}
	return nil
}

// handshakeNonce returns the nonce of a CreateSession or ContinueSession;
// ok is false for any other message.
func handshakeNonce(m codec.Message) (nonce uint64, ok bool) {
	switch m := m.(type) {
	case *codec.CreateSession:
		return m.Nonce, true
	case *codec.ContinueSession:
		return m.Nonce, true
	}
	return 0, false
}

// mute answers nothing at all: a server that has stopped.
func mute(*fakeServer, transport.ConnID, codec.Message) []codec.Message { return nil }

// testOptions keep retries fast so that tests finish quickly; nothing is
// asserted about timing.
func testOptions(extra ...Option) []Option {
	return append([]Option{
		WithBackoff(5*time.Millisecond, 50*time.Millisecond, 2, 0.25),
		WithDialTimeout(2 * time.Second),
	}, extra...)
}

func dialT(t testing.TB, endpoints []string, opts ...Option) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := Dial(ctx, endpoints, testOptions(opts...)...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitEvent returns the first event from ch that matches typ, failing the
// test after waitLimit.
func waitEvent(t testing.TB, ch <-chan Event, typ EventType) Event {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		select {
		case ev := <-ch:
			if ev.Type == typ {
				return ev
			}
		case <-deadline.C:
			t.Fatalf("no %v event within %v", typ, waitLimit)
			return Event{}
		}
	}
}

// waitCall returns cl once it completes, failing the test after waitLimit.
func waitCall(t testing.TB, cl *Call) *Call {
	t.Helper()
	select {
	case <-cl.Done:
		return cl
	case <-time.After(waitLimit):
		t.Fatalf("call %q did not complete within %v", cl.Payload, waitLimit)
		return nil
	}
}
