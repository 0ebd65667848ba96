// Package client is zraft's Go client library. A Conn holds one durable
// session with a zraft cluster over ZeroMQ: Dial creates the session, Submit
// and Go run commands exactly once, Query reads (linearizable unless the
// caller accepts staleness), and server-initiated requests arrive through a
// handler or a channel. The Conn follows leader changes, detects dead
// servers with keep-alives, continues its session on another member and
// resends whatever is pending, with the same request ids so that nothing runs
// twice. docs/client.md describes the guarantees and every default.
//
// A Conn is safe for concurrent use. One event-loop goroutine owns all of its
// state: the current connection, the pending table, timers and the session.
// User calls, frames read from the socket and timer expiries all reach it
// through channels, in the manner of net/rpc's client.
package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/transport"
)

// errAllOpen is the last attempt error when every endpoint's breaker is
// open; the loop waits a backoff delay and asks again.
var errAllOpen = errors.New("client: every endpoint's circuit breaker is open")

// errKeepAlive is the cause reported when a server stops answering
// keep-alives.
var errKeepAlive = fmt.Errorf("%w: keep-alives unanswered", ErrTimeout)

// errHandshake is the cause reported when a server accepts the connection but
// does not answer CreateSession or ContinueSession in time.
var errHandshake = fmt.Errorf("%w: session handshake unanswered", ErrTimeout)

// errUnreachable is the cause of a session loss declared locally: no member
// could be reached for twice the session timeout, so the cluster has expired
// the session.
var errUnreachable = fmt.Errorf("%w: no member reachable for twice the session timeout", ErrTimeout)

// inboundBuffer is the capacity of the channel carrying frames from the reader
// goroutine to the event loop; the reader waits when it is full, which pushes
// back on the server through TCP.
const inboundBuffer = 256

// Conn is a client's session with a zraft cluster. Create it with Dial and
// release it with Close. All methods are safe for concurrent use.
type Conn struct {
	opts   *options
	lim    codec.Limits
	log    *slog.Logger
	secret codec.Secret
	nonce  uint64 // CreateSession nonce; the same for every creation attempt

	ops     chan op            // user calls to the loop
	inbound chan inbound       // frames and read errors from reader goroutines
	dialed  chan dialResult    // results of dialer goroutines
	ready   chan error         // first session (nil) or a fatal Dial error; capacity 1
	closing chan struct{}      // closed by Close
	done    chan struct{}      // closed when the loop has exited
	srCh    chan ServerRequest // acknowledged server requests for the delivery goroutine
	evCh    chan Event         // events for the event-handler goroutine
	ctx     context.Context    // cancelled when the loop exits; ends dials
	cancel  context.CancelFunc
	closeMu sync.Once
	wg      sync.WaitGroup // every goroutine the Conn starts but the two below
	// srWG and evWG wait for the server-request and event delivery
	// goroutines, whose ids srGoroutine and evGoroutine record, so that
	// Close called from a handler does not wait for itself.
	srWG, evWG               sync.WaitGroup
	srGoroutine, evGoroutine atomic.Uint64
	// noteCh carries notifications to their handler's goroutine
	// (notify.go), which noteWG waits for and noteGoroutine names.
	noteCh        chan Notification
	noteWG        sync.WaitGroup
	noteGoroutine atomic.Uint64
	termErr       error // why the loop exited; written before done is closed
	state         atomic.Int32
	info          atomic.Pointer[sessionInfo]

	// Everything below is owned by the event loop.
	pend        *pending
	eps         endpointSet
	link        *link  // the current connection attempt or connection; nil when none
	gen         uint64 // generation of the last link, to ignore stale input
	haveSession bool
	sid         codec.SessionID
	kaInterval  time.Duration
	sessTimeout time.Duration
	kaNext      time.Time
	// kaUnanswered counts keep-alives sent since the last answer.
	kaUnanswered int
	// lastHeard is when any member last answered anything; the session is
	// declared lost locally only after twice the session timeout of
	// silence from every member.
	lastHeard   time.Time
	retryAt     time.Time  // when to start the next connection attempt; zero if none is due
	retry       retryState // counters of the retry policy (policy.go)
	next        string     // address the next attempt goes to; empty: rotation
	contNonce   uint64     // nonce of the last ContinueSession
	order       *reorder
	lastErr     error // cause of the last failed attempt, reported by Dial
	dialPending bool  // Dial still waits on ready
	stopped     bool  // the loop must exit after the current event
	// noteLost: notifications may have been lost since the last one handed
	// to the handler (a full buffer, or the session was continued).
	noteLost bool
}

// sessionInfo is the snapshot behind SessionID and Members.
type sessionInfo struct {
	id      codec.SessionID
	members []codec.Member
}

type opKind int

const (
	opCall   opKind = iota // a new command or query
	opCancel               // the caller's context ended
	opAck                  // the application finished server request id (manual ack)
)

// op is a user call handed to the loop.
type op struct {
	kind  opKind
	call  *call
	reply chan cancelResult // for opCancel
	id    uint64            // for opAck
}

// cancelResult tells a cancelling caller what became of its call.
type cancelResult struct {
	completed bool // the call had already completed; read its Done
	sent      bool // it had been sent, so a command may still execute
}

type inbound struct {
	gen   uint64
	frame []byte
	err   error
}

type dialResult struct {
	gen uint64
	tc  *transport.Conn
	err error
}

// Dial connects to one of endpoints ("host:port" client addresses of
// cluster members), creates a session and returns when the session exists.
// It keeps trying, following leader hints and backing off between attempts,
// until ctx ends, in which case the error wraps ctx's error and the last
// attempt's error. A session the application refuses ends Dial at once with
// an error matching ErrRejected.
func Dial(ctx context.Context, endpoints []string, opts ...Option) (*Conn, error) {
	if len(endpoints) == 0 {
		return nil, ErrNoEndpoints
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	c := &Conn{
		opts: o,
		lim:  o.limits,
		log:  o.logger,
		// Unbuffered, so that a call is either taken by the running loop
		// or sees done closed: none can be stranded in a buffer.
		ops:     make(chan op),
		inbound: make(chan inbound, inboundBuffer),
		dialed:  make(chan dialResult),
		ready:   make(chan error, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		pend:    newPending(o.maxPending),
		order:   newReorder(o.srBuffer, o.manualAck),
	}
	var seed [8]byte
	// crypto/rand never fails on supported platforms (it panics instead),
	// so its results need no error handling.
	_, _ = rand.Read(c.secret[:])
	_, _ = rand.Read(seed[:])
	c.nonce = binary.BigEndian.Uint64(seed[:])
	c.contNonce = c.nonce
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.eps.settings = c.breakerSettings
	for _, addr := range endpoints {
		c.eps.add(addr)
	}
	if o.srHandler != nil || o.srChan != nil {
		c.srCh = make(chan ServerRequest, o.srBuffer)
		c.srWG.Add(1)
		go c.deliverServerRequests()
	}
	if o.noteHandler != nil {
		c.noteCh = make(chan Notification, o.noteBuffer)
		c.noteWG.Add(1)
		go c.deliverNotifications()
	}
	if o.eventHandler != nil {
		c.evCh = make(chan Event, eventQueue)
		c.evWG.Add(1)
		go c.deliverEvents()
	}
	c.state.Store(int32(StateConnecting))
	c.dialPending = true
	c.wg.Add(1)
	go c.run()

	select {
	case err := <-c.ready:
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		_ = c.Close()
		// The loop has exited, so its lastErr can be read.
		if c.lastErr != nil {
			return nil, fmt.Errorf("client: dial: %w (last attempt: %w)", ctx.Err(), c.lastErr)
		}
		return nil, fmt.Errorf("client: dial: %w", ctx.Err())
	}
}

// Submit runs a command exactly once and returns the application's result.
// The command is resent with the same request id after timeouts and
// reconnections; the cluster's response cache makes the resends harmless.
//
// When ctx ends first, Submit returns at once. If the command had not been
// sent yet, it is withdrawn and will never execute; the error then wraps
// ctx's error only. Otherwise the error matches both ErrOutcomeUnknown and
// ctx's error: the command may still execute, and the Conn keeps it pending
// (resending it as usual) until the cluster answers or its attempts run out,
// so that its id keeps the cluster's cached response until then.
func (c *Conn) Submit(ctx context.Context, payload []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client: submit not sent: %w", err)
	}
	cl := c.start(false, payload, codec.Linearizable)
	return c.wait(ctx, cl)
}

// Go starts a command asynchronously and returns its Call, which is sent on
// the Call's Done channel when it completes. The semantics are Submit's,
// without a context: the call ends with a result, an error from the
// cluster, an exhausted attempt budget, session loss or Close.
func (c *Conn) Go(payload []byte) *Call {
	return c.start(false, payload, codec.Linearizable).pub
}

// Query runs a read-only query. It is linearizable (served after a ReadIndex
// round on the leader) unless AllowStale is given. Queries are resent with
// the same correlation id after timeouts and reconnections; being read-only,
// they need no deduplication. When ctx ends the query is withdrawn and the
// error wraps ctx's error.
func (c *Conn) Query(ctx context.Context, payload []byte, opts ...QueryOption) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("client: query not sent: %w", err)
	}
	var qo queryOptions
	for _, o := range opts {
		o(&qo)
	}
	cl := c.start(true, payload, qo.consistency)
	return c.wait(ctx, cl)
}

// SessionID returns the id the cluster gave this session.
func (c *Conn) SessionID() codec.SessionID {
	if in := c.info.Load(); in != nil {
		return in.id
	}
	return codec.SessionID{}
}

// Members returns the cluster members and their client addresses as the
// cluster announced them when the session was created.
func (c *Conn) Members() []codec.Member {
	if in := c.info.Load(); in != nil {
		return slices.Clone(in.members)
	}
	return nil
}

// State returns where the Conn stands now.
func (c *Conn) State() State { return State(c.state.Load()) }

// Close ends the session: it tells the server (CloseSession with
// CodeClientClosed, written for up to the transport's linger of 1 s), fails
// every pending call with ErrClosed (commands already sent also match
// ErrOutcomeUnknown: they may have executed) and waits for the Conn's
// goroutines, including a running server-request or event handler, except
// the one Close is called from: Close may be called from either handler.
// Server requests acknowledged but not yet delivered are dropped. Close
// always returns nil; calling it again does nothing.
func (c *Conn) Close() error {
	c.closeMu.Do(func() { close(c.closing) })
	c.wg.Wait()
	if g := goid(); g != c.srGoroutine.Load() {
		c.srWG.Wait()
	}
	if g := goid(); g != c.evGoroutine.Load() {
		c.evWG.Wait()
	}
	if g := goid(); g != c.noteGoroutine.Load() {
		c.noteWG.Wait()
	}
	return nil
}

// start hands a new call to the loop, or completes it at once when the Conn
// has stopped or the payload is too large.
func (c *Conn) start(query bool, payload []byte, cons codec.Consistency) *call {
	cl := &call{
		query:       query,
		consistency: cons,
		// The payload is copied because a cancelled command stays pending
		// and may be resent long after the caller has reused its buffer.
		payload: slices.Clone(payload),
		pub:     &Call{Payload: payload, Done: make(chan *Call, 1)},
	}
	if len(payload) > c.lim.MaxPayload {
		cl.finish(nil, fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrTooLarge, len(payload), c.lim.MaxPayload))
		return cl
	}
	select {
	case c.ops <- op{kind: opCall, call: cl}:
	case <-c.done:
		cl.finish(nil, c.termErr)
	}
	return cl
}

// wait blocks until cl completes or ctx ends.
func (c *Conn) wait(ctx context.Context, cl *call) ([]byte, error) {
	select {
	case <-cl.pub.Done:
		return cl.pub.Result, cl.pub.Error
	case <-ctx.Done():
	}
	reply := make(chan cancelResult, 1)
	var res cancelResult
	select {
	case c.ops <- op{kind: opCancel, call: cl, reply: reply}:
		select {
		case res = <-reply:
		case <-c.done:
			// The loop exited before answering; it failed the call.
			res.completed = true
		}
	case <-cl.pub.Done:
		return cl.pub.Result, cl.pub.Error
	case <-c.done:
		res.completed = true
	}
	switch {
	case res.completed:
		<-cl.pub.Done
		return cl.pub.Result, cl.pub.Error
	case cl.query:
		return nil, fmt.Errorf("client: query withdrawn: %w", ctx.Err())
	case res.sent:
		return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	default:
		return nil, fmt.Errorf("client: submit not sent: %w", ctx.Err())
	}
}
