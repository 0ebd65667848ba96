// Package test holds black-box tests of zraft: real nodes on loopback,
// driven over the wire protocol with the transport and codec packages (no
// client library), so that what they check is what any client in any
// language would see.
package test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/node"
	"github.com/zraft/zraft/transport"
)

const waitTimeout = 10 * time.Second

// counterApp counts: command "incr" (any payload) adds one and returns the
// new value as 8 bytes; the query returns the value; command "emit:N" emits
// N server requests to the calling session ("work-0", ...; "emit:N:SIZE":
// N payloads of SIZE zero bytes). It records how often Apply ran,
// which is how tests see that a retried request was not executed twice.
type counterApp struct {
	mu      sync.Mutex
	value   uint64
	applied *countRegistry
	node    int
}

// countRegistry counts Apply calls per node (each node has its own app).
type countRegistry struct {
	mu sync.Mutex
	n  map[int]int
}

func (r *countRegistry) add(node int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[node]++
}

func (r *countRegistry) get(node int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[node]
}

func (a *counterApp) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	a.applied.add(a.node)
	var n, size int
	if _, err := fmt.Sscanf(string(cmd), "emit:%d", &n); err == nil {
		// "emit:N:SIZE" emits N equal payloads of SIZE zero bytes (the
		// machine holds one copy of them).
		_, _ = fmt.Sscanf(string(cmd), "emit:%d:%d", &n, &size)
		for i := 0; i < n; i++ {
			p := []byte(fmt.Sprintf("work-%d", i))
			if size > 0 {
				p = make([]byte, size)
			}
			if err := ctx.Emit(fsm.ToSession(ctx.Session()), p); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.value++
	return binary.BigEndian.AppendUint64(nil, a.value), nil
}

func (a *counterApp) Query([]byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return binary.BigEndian.AppendUint64(nil, a.value), nil
}

func (a *counterApp) SessionOpened(*fsm.Context, fsm.SessionInfo) error { return nil }
func (a *counterApp) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {
}

func (a *counterApp) SaveSnapshot(w io.Writer) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := w.Write(binary.BigEndian.AppendUint64(nil, a.value))
	return err
}

func (a *counterApp) RecoverFromSnapshot(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.value = binary.BigEndian.Uint64(b[:])
	return nil
}

type cluster struct {
	*node.Cluster
	applied *countRegistry
}

// startCluster starts an in-memory 3-node cluster of counterApps with short
// timeouts.
func startCluster(t *testing.T, tweak func(*node.Config), opts ...node.Option) *cluster {
	return startAppCluster(t, tweak, nil, opts...)
}

// startAppCluster is startCluster with another application (nil: counterApp).
func startAppCluster(t *testing.T, tweak func(*node.Config), app func() fsm.Application, opts ...node.Option) *cluster {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.InMemory = true
	cfg.KeepAliveInterval = 200 * time.Millisecond
	cfg.SessionTimeout = 2 * time.Second
	cfg.RedeliverInterval = 300 * time.Millisecond
	cfg.ShutdownGrace = 2 * time.Second
	if tweak != nil {
		tweak(&cfg)
	}
	reg := &countRegistry{n: map[int]int{}}
	next := 0
	var mu sync.Mutex
	newApp := app
	if newApp == nil {
		newApp = func() fsm.Application {
			mu.Lock()
			defer mu.Unlock()
			next++
			return &counterApp{applied: reg, node: next}
		}
	}
	if os.Getenv("ZRAFT_TEST_LOG") == "" {
		opts = append(opts, node.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := node.StartLocalCluster(ctx, 3, cfg, nil, newApp, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Logf("close cluster: %v", err)
		}
	})
	return &cluster{Cluster: c, applied: reg}
}

func (c *cluster) leader(t *testing.T) *node.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	l, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (c *cluster) follower(t *testing.T) *node.Node {
	t.Helper()
	l := c.leader(t)
	for _, n := range c.Nodes() {
		if n != l {
			return n
		}
	}
	t.Fatal("no follower")
	return nil
}

// wire is a raw protocol client: one transport connection, frames decoded
// by a reader goroutine into a channel.
type wire struct {
	t    *testing.T
	conn *transport.Conn
	in   chan codec.Message
	done chan struct{}
}

func dial(t *testing.T, addr string) *wire {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
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
				t.Errorf("server sent an undecodable frame: %v", err)
				return
			}
			select {
			case w.in <- m:
			default:
				t.Errorf("test client inbox overflow")
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
	w.sendRaw(f)
}

func (w *wire) sendRaw(f []byte) {
	w.t.Helper()
	if err := w.conn.Send(f); err != nil {
		w.t.Fatalf("send: %v", err)
	}
}

var errNoMessage = errors.New("no message")

// next returns the next message that match accepts, skipping others (such
// as keep-alive responses), or fails the test after waitTimeout.
func (w *wire) next(match func(codec.Message) bool) codec.Message {
	w.t.Helper()
	m, err := w.nextWithin(waitTimeout, match)
	if err != nil {
		w.t.Fatal(err)
	}
	return m
}

func (w *wire) nextWithin(d time.Duration, match func(codec.Message) bool) (codec.Message, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-w.in:
			if !ok {
				return nil, fmt.Errorf("%w: connection closed", errNoMessage)
			}
			if match == nil || match(m) {
				return m, nil
			}
		case <-timer.C:
			return nil, fmt.Errorf("%w within %v", errNoMessage, d)
		}
	}
}

func kindIs(kinds ...codec.Kind) func(codec.Message) bool {
	return func(m codec.Message) bool {
		for _, k := range kinds {
			if m.Kind() == k {
				return true
			}
		}
		return false
	}
}

// secretSeq makes nonces and secrets unique; writers on several goroutines
// draw from it.
var secretSeq atomic.Uint64

// createSession creates a session on this connection and returns it.
func (w *wire) createSession(caps ...codec.Capability) (*codec.SessionCreated, codec.Secret) {
	w.t.Helper()
	var secret codec.Secret
	seq := secretSeq.Add(1)
	binary.BigEndian.PutUint64(secret[:], uint64(time.Now().UnixNano())+seq)
	w.send(&codec.CreateSession{Nonce: seq, Secret: secret, Capabilities: caps})
	m := w.next(kindIs(codec.KindSessionCreated, codec.KindSessionRejected))
	created, ok := m.(*codec.SessionCreated)
	if !ok {
		w.t.Fatalf("CreateSession: %+v", m)
	}
	return created, secret
}

// request sends a ClientRequest and waits for its answer.
func (w *wire) request(id, lowest uint64, payload string) codec.Message {
	w.t.Helper()
	w.send(&codec.ClientRequest{RequestID: id, LowestPending: lowest, Payload: []byte(payload)})
	return w.next(answers(id))
}

// answers matches the answer to request id, or the connection's refusal.
func answers(id uint64) func(codec.Message) bool {
	return func(m codec.Message) bool {
		switch r := m.(type) {
		case *codec.ClientResponse:
			return r.RequestID == id
		case *codec.RequestError:
			return r.RequestID == id
		case *codec.SessionClosed:
			return true
		}
		return false
	}
}

func counterValue(t *testing.T, m codec.Message) uint64 {
	t.Helper()
	r, ok := m.(*codec.ClientResponse)
	if !ok || len(r.Result) != 8 {
		t.Fatalf("want a counter ClientResponse, got %#v", m)
	}
	return binary.BigEndian.Uint64(r.Result)
}

// continueSession binds an existing session to this connection and returns
// the server's answer (SessionContinued or SessionRejected).
func (w *wire) continueSession(id codec.SessionID, secret codec.Secret) codec.Message {
	w.t.Helper()
	nonce := secretSeq.Add(1)
	w.send(&codec.ContinueSession{SessionID: id, Secret: secret, Nonce: nonce})
	return w.next(func(m codec.Message) bool {
		switch r := m.(type) {
		case *codec.SessionContinued:
			return r.Nonce == nonce
		case *codec.SessionRejected:
			return r.Nonce == nonce
		}
		return false
	})
}

// persistent is a session driven like a real client would: requests are
// resent with the same id when no answer comes, and the session is
// continued (on whichever node leads) when the connection is refused.
type persistent struct {
	t      *testing.T
	c      *cluster
	w      *wire
	id     codec.SessionID
	secret codec.Secret
}

func newPersistent(t *testing.T, c *cluster) *persistent {
	w := dial(t, c.leader(t).ClientAddr())
	created, secret := w.createSession()
	return &persistent{t: t, c: c, w: w, id: created.SessionID, secret: secret}
}

func (p *persistent) reconnect() {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		p.w.close()
		p.w = dial(p.t, p.c.leader(p.t).ClientAddr())
		if _, ok := p.w.continueSession(p.id, p.secret).(*codec.SessionContinued); ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatal("could not continue the session")
}

// do sends request id until it gets a definite answer (ClientResponse or an
// application error), resending on silence and reconnecting when refused.
func (p *persistent) do(id, lowest uint64, payload string) codec.Message {
	p.t.Helper()
	deadline := time.Now().Add(3 * waitTimeout)
	for time.Now().Before(deadline) {
		f, err := codec.Encode(&codec.ClientRequest{RequestID: id, LowestPending: lowest, Payload: []byte(payload)})
		if err != nil {
			p.t.Fatal(err)
		}
		if err := p.w.conn.Send(f); err != nil {
			// The connection died (its node stopped): go to the leader.
			p.reconnect()
			continue
		}
		m, err := p.w.nextWithin(time.Second, answers(id))
		switch r := m.(type) {
		case *codec.ClientResponse:
			return r
		case *codec.RequestError:
			if r.Reason == codec.CodeApplication || !r.Reason.Retryable() {
				return r
			}
			if r.Reason == codec.CodeNotLeader {
				p.reconnect()
			}
		case *codec.SessionClosed:
			if r.Reason == codec.CodeSessionExpired || r.Reason == codec.CodeClientClosed {
				p.t.Fatalf("session lost: %+v", r)
			}
			p.reconnect()
		default:
			if errors.Is(err, errNoMessage) && err != nil && !p.alive() {
				p.reconnect()
			}
		}
	}
	p.t.Fatalf("request %d never answered", id)
	return nil
}

// alive reports whether the connection still answers keep-alives.
func (p *persistent) alive() bool {
	ts := time.Now().UnixNano()
	f, _ := codec.Encode(&codec.KeepAlive{Timestamp: ts})
	if p.w.conn.Send(f) != nil {
		return false
	}
	_, err := p.w.nextWithin(500*time.Millisecond, func(m codec.Message) bool {
		r, ok := m.(*codec.KeepAliveResponse)
		return ok && r.Timestamp == ts
	})
	return err == nil
}

func counterFromBytes(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settledApplies waits until every replica has run the application equally
// often and returns that count.
func (c *cluster) settledApplies(t *testing.T) int {
	t.Helper()
	var n int
	waitFor(t, "replicas to apply the same commands", func() bool {
		n = c.applied.get(1)
		return n > 0 && c.applied.get(2) == n && c.applied.get(3) == n
	})
	return n
}
