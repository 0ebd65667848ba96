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
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

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
	wg      sync.WaitGroup // every goroutine the Conn starts
	termErr error          // why the loop exited; written before done is closed
	state   atomic.Int32
	info    atomic.Pointer[sessionInfo]

	// Everything below is owned by the event loop.
	pend         *pending
	eps          endpointSet
	link         *link  // the current connection attempt or connection; nil when none
	gen          uint64 // generation of the last link, to ignore stale input
	haveSession  bool
	sid          codec.SessionID
	kaInterval   time.Duration
	sessTimeout  time.Duration
	kaNext       time.Time
	kaUnanswered int       // keep-alives sent since the last answer
	lastHeard    time.Time // last keep-alive answer while bound, for the loss deadline
	retryAt      time.Time // when to start the next connection attempt; zero if none is due
	failures     int       // consecutive attempts that did not end with a proven connection
	redirects    int       // consecutive redirects since the last bound connection
	hint         string    // address of the hinted leader, tried next
	contNonce    uint64    // nonce of the last ContinueSession
	order        *reorder
	lastErr      error // cause of the last failed attempt, reported by Dial
	dialPending  bool  // Dial still waits on ready
	stopped      bool  // the loop must exit after the current event
}

// sessionInfo is the snapshot behind SessionID and Members.
type sessionInfo struct {
	id      codec.SessionID
	members []codec.Member
}

// link is one connection attempt and, once the session is bound to it, the
// live connection.
type link struct {
	gen      uint64
	ep       *endpoint
	done     func(error)        // breaker outcome of the attempt; nil once reported
	cancel   context.CancelFunc // aborts the transport dial
	tc       *transport.Conn    // nil while dialing
	stop     chan struct{}      // closed to release the reader goroutine
	nonce    uint64             // nonce of the session handshake sent on it
	deadline time.Time          // end of the attempt, until bound
	ready    bool               // the session is bound to this connection
	proved   bool               // the server answered something after binding
}

type opKind int

const (
	opCall   opKind = iota // a new command or query
	opCancel               // the caller's context ended
)

// op is a user call handed to the loop.
type op struct {
	kind  opKind
	call  *call
	reply chan cancelResult // for opCancel
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
		order:   newReorder(o.srBuffer),
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
		c.wg.Add(1)
		go c.deliverServerRequests()
	}
	if o.eventHandler != nil {
		c.evCh = make(chan Event, eventQueue)
		c.wg.Add(1)
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
// every pending call with ErrClosed and waits for the Conn's goroutines,
// including a running server-request or event handler. Server requests
// acknowledged but not yet delivered are dropped. Close always returns nil;
// calling it again does nothing.
func (c *Conn) Close() error {
	c.closeMu.Do(func() { close(c.closing) })
	c.wg.Wait()
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

// run is the event loop. It owns every field documented as loop-owned and
// exits on Close, on session loss, or when Dial's session is refused.
func (c *Conn) run() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	c.connect(time.Now())
	for !c.stopped {
		if wake, ok := c.nextWake(); ok {
			timer.Reset(max(time.Until(wake), 0))
		} else {
			timer.Stop()
		}
		select {
		case <-c.closing:
			c.shutdown()
			return
		case o := <-c.ops:
			c.handleOp(o, time.Now())
		case in := <-c.inbound:
			c.handleInbound(in, time.Now())
		case d := <-c.dialed:
			c.handleDialed(d, time.Now())
		case <-timer.C:
			c.handleTimers(time.Now())
		}
		if !c.stopped {
			c.deliver()
		}
	}
}

// nextWake returns the earliest moment the loop has something to do on its
// own.
func (c *Conn) nextWake() (time.Time, bool) {
	var wake time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	switch l := c.link; {
	case l == nil:
		consider(c.retryAt)
	case !l.ready:
		consider(l.deadline)
	default:
		consider(c.kaNext)
		if t, ok := c.pend.nextDeadline(); ok {
			consider(t)
		}
	}
	if dl, ok := c.lossDeadline(); ok {
		consider(dl)
	}
	return wake, !wake.IsZero()
}

// lossDeadline is when a session that cannot reach any member is declared
// lost locally. By twice the session timeout after the last answer the
// cluster has expired it (a new leader grants only a short grace beyond the
// timeout), so waiting longer would only delay the inevitable error.
func (c *Conn) lossDeadline() (time.Time, bool) {
	if !c.haveSession || c.sessTimeout <= 0 || c.link != nil && c.link.ready {
		return time.Time{}, false
	}
	return c.lastHeard.Add(2 * c.sessTimeout), true
}

// connect starts a connection attempt to the hinted leader or the next
// endpoint whose breaker is closed.
func (c *Conn) connect(now time.Time) {
	c.retryAt = time.Time{}
	hint := c.hint
	c.hint = ""
	ep, done, ok := c.eps.pick(hint)
	if !ok {
		if c.lastErr != nil && !errors.Is(c.lastErr, errAllOpen) {
			c.lastErr = fmt.Errorf("%w; last failure: %w", errAllOpen, c.lastErr)
		} else if c.lastErr == nil {
			c.lastErr = errAllOpen
		}
		c.failures++
		c.scheduleRetry(now, false)
		return
	}
	c.gen++
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.dialTimeout)
	l := &link{
		gen:      c.gen,
		ep:       ep,
		done:     done,
		cancel:   cancel,
		stop:     make(chan struct{}),
		deadline: now.Add(c.opts.dialTimeout),
	}
	c.link = l
	cfg := transport.DefaultDialConfig()
	cfg.MaxFrameSize = c.lim.MaxFrame
	cfg.Timeout = c.opts.dialTimeout
	cfg.SendQueue = min(c.opts.maxPending+64, 1<<20)
	cfg.TLS = c.opts.tls
	c.log.Debug("client: connecting", "endpoint", ep.addr, "hinted", hint != "")
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		tc, err := transport.Dial(ctx, ep.addr, cfg)
		select {
		case c.dialed <- dialResult{gen: l.gen, tc: tc, err: err}:
		case <-c.done:
			if tc != nil {
				_ = tc.Close()
			}
		}
	}()
}

// scheduleRetry arms the next connection attempt: at once when immediate,
// otherwise after the backoff delay for the current failure count.
func (c *Conn) scheduleRetry(now time.Time, immediate bool) {
	if immediate {
		c.retryAt = now
		return
	}
	c.retryAt = now.Add(c.opts.backoff.delay(c.failures-1, mrand.Float64()))
}

func (c *Conn) handleDialed(d dialResult, now time.Time) {
	l := c.link
	if l == nil || d.gen != l.gen || l.tc != nil {
		// An attempt already abandoned (its deadline passed).
		if d.tc != nil {
			c.closeAsync(d.tc)
		}
		return
	}
	if d.err != nil {
		c.abandon(now, d.err, true, "")
		return
	}
	l.tc = d.tc
	c.wg.Add(1)
	go c.read(l.gen, d.tc, l.stop)
	var m codec.Message
	if c.haveSession {
		c.contNonce++
		l.nonce = c.contNonce
		m = &codec.ContinueSession{SessionID: c.sid, Secret: c.secret, Nonce: l.nonce}
	} else {
		l.nonce = c.nonce
		m = &codec.CreateSession{Nonce: c.nonce, Secret: c.secret, Capabilities: c.opts.capabilities}
	}
	if err := c.send(m); err != nil {
		c.abandon(now, err, false, "")
	}
}

// read is a link's reader goroutine: it feeds frames to the loop until the
// connection dies or the loop lets it go.
func (c *Conn) read(gen uint64, tc *transport.Conn, stop <-chan struct{}) {
	defer c.wg.Done()
	for {
		frame, err := tc.Recv()
		select {
		case c.inbound <- inbound{gen: gen, frame: frame, err: err}:
		case <-stop:
			return
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// closeAsync closes a transport connection without blocking the loop:
// Close lingers to flush queued frames.
func (c *Conn) closeAsync(tc *transport.Conn) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = tc.Close()
	}()
}

// send encodes m and queues it on the current connection. A full queue drops
// the frame: requests are resent on timeout and keep-alives count a miss.
func (c *Conn) send(m codec.Message) error {
	l := c.link
	if l == nil || l.tc == nil {
		return transport.ErrClosed
	}
	frame, err := codec.Append(nil, m, &c.lim)
	if err != nil {
		return err
	}
	if err := l.tc.Send(frame); err != nil {
		c.log.Debug("client: send failed", "kind", m.Kind(), "err", err)
		return err
	}
	return nil
}

// dropLink releases the current link. Commands in flight on it become
// ambiguous: they may have executed.
func (c *Conn) dropLink() {
	l := c.link
	if l == nil {
		return
	}
	for _, cl := range c.pend.timers {
		if !cl.waiting && !cl.query {
			cl.ambiguous = true
		}
	}
	c.pend.unscheduleAll()
	close(l.stop)
	l.cancel()
	if l.tc != nil {
		c.closeAsync(l.tc)
	}
	c.link = nil
}

// abandon gives up the current link because of cause and schedules the next
// attempt. countFailure reports a transport failure or timeout to the
// endpoint's breaker; hint, when not empty, is the address tried next.
func (c *Conn) abandon(now time.Time, cause error, countFailure bool, hint string) {
	l := c.link
	if l == nil {
		return
	}
	switch {
	case l.done != nil && countFailure:
		l.done(errEndpointFailure)
	case l.done != nil:
		l.done(nil)
	case countFailure:
		l.ep.fail()
	}
	l.done = nil
	c.dropLink()
	c.lastErr = cause
	c.eps.skip(l.ep.addr)
	if hint != "" {
		c.hint = hint
		c.redirects++
	}
	immediate := false
	if l.ready && l.proved {
		// A connection that worked is worth one immediate retry elsewhere;
		// one that died before answering anything counts as a failure so
		// that a flapping server cannot make the client spin.
		c.failures = 0
		immediate = true
	} else {
		c.failures++
	}
	if c.hint != "" && c.redirects == 1 {
		// The first redirect follows the hint at once; repeated ones (an
		// election in progress) back off.
		immediate = true
	}
	if l.ready {
		c.setState(StateReconnecting)
		c.emit(Event{Type: EventReconnecting, Endpoint: l.ep.addr, Err: cause})
	}
	c.log.Info("client: connection abandoned", "endpoint", l.ep.addr, "cause", cause, "hint", hint)
	c.scheduleRetry(now, immediate)
}

// bound runs when the session is bound to l: it resends everything pending.
func (c *Conn) bound(l *link, now time.Time) {
	if l.done != nil {
		l.done(nil)
		l.done = nil
	}
	l.ready = true
	c.redirects = 0
	c.kaUnanswered = 0
	c.kaNext = now.Add(c.kaInterval)
	c.lastHeard = now
	c.setState(StateConnected)
	c.emit(Event{Type: EventConnected, Endpoint: l.ep.addr})
	c.log.Info("client: session bound", "endpoint", l.ep.addr)
	if c.dialPending {
		c.dialPending = false
		c.ready <- nil
	}
	for _, cl := range c.pend.inOrder() {
		if c.link != l {
			return // the connection failed while resending
		}
		c.transmit(cl, now, cl.attempts == 0)
	}
}

// transmit sends cl on the current link and arms its resend timer. count
// says whether the send uses up an attempt.
func (c *Conn) transmit(cl *call, now time.Time, count bool) {
	if count {
		cl.attempts++
	}
	cl.sent = true
	cl.waiting = false
	var m codec.Message
	if cl.query {
		m = &codec.Query{CorrelationID: cl.id, Consistency: cl.consistency, Payload: cl.payload}
	} else {
		m = &codec.ClientRequest{RequestID: cl.id, LowestPending: c.pend.lowestPending(), Payload: cl.payload}
	}
	if err := c.send(m); err != nil && !errors.Is(err, transport.ErrQueueFull) && !errors.Is(err, transport.ErrClosed) {
		// The message itself is invalid (it passed the payload check, so
		// this is a limit the Conn does not check up front).
		c.pend.remove(cl)
		c.complete(cl, nil, fmt.Errorf("%w: %w", ErrTooLarge, err))
		return
	}
	c.pend.schedule(cl, now.Add(c.opts.requestTimeout))
}

// complete hands the outcome to the caller; the caller must already have
// removed cl from the pending table. The outcome of a call whose caller went
// away (a cancelled Submit) is only logged.
func (c *Conn) complete(cl *call, result []byte, err error) {
	if cl.abandoned {
		c.log.Debug("client: abandoned call completed", "id", cl.id, "err", err)
	}
	cl.finish(result, err)
}

// exhausted ends cl once its attempts are used up.
func (c *Conn) exhausted(cl *call) {
	c.pend.remove(cl)
	var err error
	switch {
	case cl.query:
		err = fmt.Errorf("client: query failed after %d attempts: %w", cl.attempts, cl.lastErr)
	case cl.ambiguous:
		err = fmt.Errorf("%w after %d attempts: %w", ErrOutcomeUnknown, cl.attempts, cl.lastErr)
	default:
		err = cl.lastErr
	}
	c.complete(cl, nil, err)
}

func (c *Conn) handleOp(o op, now time.Time) {
	cl := o.call
	switch o.kind {
	case opCall:
		if err := c.pend.add(cl); err != nil {
			cl.finish(nil, fmt.Errorf("%w: %d calls pending", err, c.opts.maxPending))
			return
		}
		if l := c.link; l != nil && l.ready {
			c.transmit(cl, now, true)
		}
	case opCancel:
		if c.pend.get(cl.query, cl.id) != cl {
			o.reply <- cancelResult{completed: true}
			return
		}
		if cl.query || !cl.sent {
			c.pend.remove(cl)
			o.reply <- cancelResult{sent: cl.sent}
			return
		}
		cl.abandoned = true
		o.reply <- cancelResult{sent: true}
	}
}

func (c *Conn) handleInbound(in inbound, now time.Time) {
	l := c.link
	if l == nil || in.gen != l.gen {
		return // from a connection already given up
	}
	if in.err != nil {
		c.abandon(now, in.err, true, "")
		return
	}
	m, err := codec.Decode(in.frame, &c.lim)
	if err != nil {
		// A bad frame is dropped alone; the connection stays.
		c.log.Warn("client: dropping undecodable frame", "endpoint", l.ep.addr, "err", err)
		return
	}
	switch m := m.(type) {
	case *codec.SessionCreated:
		c.onCreated(l, m, now)
	case *codec.SessionContinued:
		if !l.ready && c.haveSession && m.Nonce == l.nonce {
			c.bound(l, now)
		}
	case *codec.SessionRejected:
		c.onRejected(l, m, now)
	case *codec.SessionClosed:
		c.onClosed(m, now)
	case *codec.KeepAliveResponse:
		if l.ready {
			c.kaUnanswered = 0
			c.lastHeard = now
			c.proven(l)
		}
	case *codec.ClientResponse:
		if cl := c.answerable(l, false, m.RequestID); cl != nil {
			c.pend.remove(cl)
			c.complete(cl, m.Result, nil)
		}
	case *codec.RequestError:
		if cl := c.answerable(l, false, m.RequestID); cl != nil {
			c.onCallError(cl, m.Reason, m.AppCode, m.Message, m.Leader, now)
		}
	case *codec.QueryResponse:
		if cl := c.answerable(l, true, m.CorrelationID); cl != nil {
			c.pend.remove(cl)
			c.complete(cl, m.Result, nil)
		}
	case *codec.QueryError:
		if cl := c.answerable(l, true, m.CorrelationID); cl != nil {
			c.onCallError(cl, m.Reason, m.AppCode, m.Message, m.Leader, now)
		}
	case *codec.ServerRequest:
		if l.ready {
			c.onServerRequest(m)
		}
	default:
		c.log.Warn("client: unexpected message", "kind", m.Kind())
	}
}

// answerable returns the pending call an answer refers to, or nil for a late
// or duplicate answer, which is ignored.
func (c *Conn) answerable(l *link, query bool, id uint64) *call {
	if !l.ready {
		return nil
	}
	c.proven(l)
	cl := c.pend.get(query, id)
	if cl == nil {
		c.log.Debug("client: ignoring late or duplicate answer", "id", id, "query", query)
	}
	return cl
}

// proven notes that the server behind l answers, which resets the backoff.
func (c *Conn) proven(l *link) {
	if !l.proved {
		l.proved = true
		c.failures = 0
	}
}

func (c *Conn) onCreated(l *link, m *codec.SessionCreated, now time.Time) {
	if l.ready || c.haveSession || m.Nonce != c.nonce {
		return
	}
	c.haveSession = true
	c.sid = m.SessionID
	c.kaInterval = m.KeepAliveInterval
	if c.kaInterval <= 0 {
		c.kaInterval = defaultKeepAlive
	}
	c.sessTimeout = m.SessionTimeout
	c.info.Store(&sessionInfo{id: m.SessionID, members: slices.Clone(m.Members)})
	for _, mem := range m.Members {
		if mem.ClientAddr != "" {
			c.eps.add(mem.ClientAddr)
		}
	}
	c.bound(l, now)
}

func (c *Conn) onRejected(l *link, m *codec.SessionRejected, now time.Time) {
	if l.ready || m.Nonce != l.nonce || l.tc == nil {
		return
	}
	err := remoteError(m.Reason, 0, m.Message)
	switch m.Reason {
	case codec.CodeNotLeader, codec.CodeShuttingDown:
		c.abandon(now, err, false, m.Leader.ClientAddr)
	case codec.CodeSessionNotFound, codec.CodeSessionExpired, codec.CodeBadSecret:
		if c.haveSession {
			c.lose(err)
			return
		}
		c.abandon(now, err, false, "")
	case codec.CodeRejected, codec.CodeTooLarge, codec.CodeMalformed, codec.CodeUnsupported:
		// Asking again would get the same answer.
		if c.haveSession {
			c.lose(err)
			return
		}
		c.fatal(err)
	default:
		c.abandon(now, err, false, "")
	}
}

func (c *Conn) onClosed(m *codec.SessionClosed, now time.Time) {
	err := remoteError(m.Reason, 0, m.Message)
	switch m.Reason {
	case codec.CodeClientClosed:
		// Our own close, echoed.
	case codec.CodeSessionExpired:
		if c.haveSession {
			c.lose(err)
		}
	case codec.CodeNotLeader, codec.CodeShuttingDown:
		c.abandon(now, err, false, m.Leader.ClientAddr)
	default:
		// The binding is gone (SessionNotFound, SessionMoved, ...):
		// continuing the session tells whether the session still exists.
		c.abandon(now, err, false, "")
	}
}

// onCallError applies the retry policy to an error answer for cl.
func (c *Conn) onCallError(cl *call, code codec.Code, appCode uint32, msg string, leader codec.LeaderHint, now time.Time) {
	err := remoteError(code, appCode, msg)
	switch classify(code) {
	case actionRedirect:
		c.abandon(now, err, false, leader.ClientAddr)
	case actionReconnect:
		c.abandon(now, err, false, "")
	case actionLost:
		c.lose(err)
	case actionBackoff:
		cl.lastErr = err
		if ambiguousCode(code) && !cl.query {
			cl.ambiguous = true
		}
		if cl.attempts >= c.opts.maxAttempts {
			c.exhausted(cl)
			return
		}
		cl.waiting = true
		c.pend.schedule(cl, now.Add(c.opts.backoff.delay(cl.attempts-1, mrand.Float64())))
	default:
		c.pend.remove(cl)
		c.complete(cl, nil, err)
	}
}

func (c *Conn) onServerRequest(m *codec.ServerRequest) {
	r := ServerRequest{ID: m.RequestID, CreatedAt: time.Unix(0, m.CreatedAt), Payload: m.Payload}
	if c.order.offer(r) == offerDuplicate {
		// The server missed our acknowledgement; repeat it.
		_ = c.send(&codec.ServerRequestAck{RequestID: c.order.acked})
	}
}

// deliver moves server requests that are next in order into the delivery
// buffer and acknowledges them. It runs after every event so that room
// freed by the consumer is used without the server having to resend.
func (c *Conn) deliver() {
	l := c.link
	if l == nil || !l.ready || !c.order.ready() {
		return
	}
	room := c.order.limit
	if c.srCh != nil {
		// Only the loop sends on srCh, so the room seen here cannot
		// shrink before the sends below.
		room = cap(c.srCh) - len(c.srCh)
	}
	batch := c.order.take(room)
	if len(batch) == 0 {
		return
	}
	for _, r := range batch {
		if c.srCh != nil {
			c.srCh <- r
		} else {
			c.log.Debug("client: server request dropped: no handler", "id", r.ID)
		}
	}
	_ = c.send(&codec.ServerRequestAck{RequestID: c.order.acked})
}

func (c *Conn) handleTimers(now time.Time) {
	if dl, ok := c.lossDeadline(); ok && !now.Before(dl) {
		c.lose(errUnreachable)
		return
	}
	l := c.link
	switch {
	case l == nil:
		if !c.retryAt.IsZero() && !now.Before(c.retryAt) {
			c.connect(now)
		}
	case !l.ready:
		if !now.Before(l.deadline) {
			cause := errHandshake
			if l.tc == nil {
				cause = fmt.Errorf("%w: dial %s", ErrTimeout, l.ep.addr)
			}
			c.abandon(now, cause, true, "")
		}
	default:
		if !now.Before(c.kaNext) {
			if c.kaUnanswered >= c.opts.keepAliveMisses {
				c.abandon(now, errKeepAlive, true, "")
				return
			}
			c.kaUnanswered++
			c.kaNext = now.Add(c.kaInterval)
			_ = c.send(&codec.KeepAlive{Timestamp: now.UnixNano(), AckedUpTo: c.order.acked})
		}
		for c.link == l {
			cl := c.pend.popDue(now)
			if cl == nil {
				break
			}
			c.onCallTimer(l, cl, now)
		}
	}
}

// onCallTimer handles a call whose timer fired on l: the end of a backoff
// wait, or an attempt left unanswered.
func (c *Conn) onCallTimer(l *link, cl *call, now time.Time) {
	if cl.waiting {
		c.transmit(cl, now, true)
		return
	}
	cl.lastErr = ErrTimeout
	if !cl.query {
		cl.ambiguous = true
	}
	l.ep.fail()
	switch {
	case cl.attempts >= c.opts.maxAttempts:
		c.exhausted(cl)
	case !l.ep.open:
		c.transmit(cl, now, true)
	}
	if l.ep.open {
		// Enough timeouts tripped the breaker: the server is not serving
		// us. Continue the session elsewhere; pending calls are resent
		// there.
		c.abandon(now, fmt.Errorf("%w: requests unanswered", ErrTimeout), false, "")
	}
}

// lose ends the session: everything pending fails with an error matching
// ErrSessionExpired, and the loop exits. No new session is created.
func (c *Conn) lose(cause error) {
	err := lostError(cause)
	c.log.Warn("client: session lost", "err", err)
	c.terminate(err, StateSessionLost)
	c.emit(Event{Type: EventSessionLost, Err: err})
	c.stopLoop()
}

// fatal ends Dial with err.
func (c *Conn) fatal(err error) {
	c.lastErr = err
	c.terminate(err, StateClosed)
	if c.dialPending {
		c.dialPending = false
		c.ready <- err
	}
	c.stopLoop()
}

// shutdown runs on Close.
func (c *Conn) shutdown() {
	if l := c.link; l != nil && l.ready {
		_ = c.send(&codec.CloseSession{Reason: codec.CodeClientClosed})
	}
	c.terminate(ErrClosed, StateClosed)
	c.emit(Event{Type: EventClosed})
	c.stopLoop()
}

// terminate fails every pending call with err, releases the link and
// records err for calls made from now on.
func (c *Conn) terminate(err error, st State) {
	c.dropLink()
	for _, cl := range c.pend.inOrder() {
		c.pend.remove(cl)
		c.complete(cl, nil, err)
	}
	c.termErr = err
	c.setState(st)
}

// stopLoop releases the goroutines that depend on the loop. It runs once,
// as the loop's last action.
func (c *Conn) stopLoop() {
	c.stopped = true
	c.cancel()
	if c.srCh != nil {
		close(c.srCh)
	}
	if c.evCh != nil {
		close(c.evCh)
	}
	close(c.done)
}

func (c *Conn) setState(s State) { c.state.Store(int32(s)) }

// emit passes ev to the configured receiver without blocking the loop.
func (c *Conn) emit(ev Event) {
	ev.Time = time.Now()
	var ch chan<- Event
	switch {
	case c.opts.eventChan != nil:
		ch = c.opts.eventChan
	case c.evCh != nil:
		ch = c.evCh
	default:
		return
	}
	select {
	case ch <- ev:
	default:
		c.log.Warn("client: event dropped: receiver is behind", "event", ev.String())
	}
}

// deliverServerRequests is the goroutine that hands acknowledged server
// requests to the application, in order.
func (c *Conn) deliverServerRequests() {
	defer c.wg.Done()
	for r := range c.srCh {
		select {
		case <-c.closing:
			return
		default:
		}
		if c.opts.srHandler != nil {
			c.opts.srHandler(r)
			continue
		}
		select {
		case c.opts.srChan <- r:
		case <-c.closing:
			return
		}
	}
}

// deliverEvents is the goroutine that calls the event handler.
func (c *Conn) deliverEvents() {
	defer c.wg.Done()
	for ev := range c.evCh {
		c.opts.eventHandler(ev)
	}
}

// breakerSettings builds the circuit breaker of one endpoint. Only the loop
// calls the breaker, so OnStateChange runs on the loop and may touch its
// state; it must not call the breaker back (gobreaker holds its mutex).
func (c *Conn) breakerSettings(addr string, ep *endpoint) gobreaker.Settings {
	threshold := c.opts.breakerFailures
	return gobreaker.Settings{
		Name:        addr,
		MaxRequests: 1,
		Timeout:     c.opts.breakerOpen,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= threshold },
		IsSuccessful: func(err error) bool {
			return err == nil
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			ep.open = to == gobreaker.StateOpen
			c.log.Info("client: breaker state", "endpoint", name, "from", from.String(), "to", to.String())
			switch {
			case to == gobreaker.StateOpen:
				c.emit(Event{Type: EventBreakerOpened, Endpoint: name})
			case to == gobreaker.StateClosed:
				c.emit(Event{Type: EventBreakerClosed, Endpoint: name})
			}
		},
	}
}
