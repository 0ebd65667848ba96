package client

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/transport"
)

// link is one connection attempt and, once the session is bound to it, the
// live connection. It belongs to the event loop.
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
	answered bool               // the server answered something on it
}

// connect starts a connection attempt to c.next, or to the next endpoint in
// rotation whose breaker is closed.
func (c *Conn) connect(now time.Time) {
	c.retryAt = time.Time{}
	target := c.next
	c.next = ""
	ep, done, ok := c.eps.pick(target)
	if !ok {
		if c.lastErr != nil && !errors.Is(c.lastErr, errAllOpen) {
			c.lastErr = fmt.Errorf("%w; last failure: %w", errAllOpen, c.lastErr)
		} else if c.lastErr == nil {
			c.lastErr = errAllOpen
		}
		// Every breaker is open: nobody can be asked, which is a transport
		// failure of the whole cluster.
		c.retry.failures++
		c.retryAt = now.Add(c.opts.backoff.delay(c.retry.failures-1, mrand.Float64()))
		return
	}
	ep.lastTry = now
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
	c.log.Debug("client: connecting", "endpoint", ep.addr, "targeted", target != "")
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
		if certError(d.err) && c.dialPending {
			// Retrying cannot fix a certificate the other side refuses.
			c.fatal(fmt.Errorf("%w: %s: %w", ErrTLS, l.ep.addr, d.err))
			return
		}
		if errors.Is(d.err, transport.ErrTooManyConnections) {
			d.err = fmt.Errorf("%w: %w", ErrTooManyConnections, d.err)
		}
		c.giveUp(now, causeTransport, d.err, "")
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
		c.giveUp(now, causeTransport, err, "")
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

// heard notes that the server behind l answered: the endpoint is alive, its
// breaker records a success, and the session is not lost while members
// answer.
func (c *Conn) heard(l *link, now time.Time) {
	c.lastHeard = now
	if !l.answered {
		l.answered = true
		c.retry.failures = 0
	}
	if l.done != nil {
		l.done(nil)
		l.done = nil
	}
}

// dropLink releases the current link. Commands in flight on it become
// ambiguous: they may have executed. Everything pending is due again.
func (c *Conn) dropLink() {
	l := c.link
	if l == nil {
		return
	}
	for _, cl := range c.pend.cmds {
		if cl.state == stateInFlight {
			cl.ambiguous = true
		}
	}
	c.pend.resendAll()
	close(l.stop)
	l.cancel()
	if l.tc != nil {
		c.closeAsync(l.tc)
	}
	c.link = nil
}

// giveUp abandons the current link because of why (err says more) and
// schedules the next attempt as the retry policy says; hint is the leader's
// address for causeRedirect.
func (c *Conn) giveUp(now time.Time, why cause, err error, hint string) {
	l := c.link
	if l == nil {
		return
	}
	p := plan(why, c.retry, c.opts.backoff, c.opts.leaderRetry, mrand.Float64())
	switch {
	case l.done != nil && p.breakerFailure:
		l.done(errEndpointFailure)
	case l.done != nil:
		l.done(nil)
	case p.breakerFailure:
		l.ep.fail()
	}
	l.done = nil
	c.retry = p.state
	c.dropLink()
	c.lastErr = err
	c.eps.skip(l.ep.addr)
	at := now.Add(p.delay)
	switch p.target {
	case targetHint:
		c.next = hint
		if ep := c.eps.lookup(hint); ep != nil {
			at = later(at, ep.lastTry.Add(minRedirectGap))
			at = c.pastOpenBreaker(ep, at, now)
		}
	case targetSame:
		c.next = l.ep.addr
		at = later(at, l.ep.lastTry.Add(minRedirectGap))
		at = c.pastOpenBreaker(l.ep, at, now)
	}
	c.retryAt = at
	if l.ready {
		c.setState(StateReconnecting)
		c.emit(Event{Type: EventReconnecting, Endpoint: l.ep.addr, Err: err})
	}
	c.log.Info("client: connection given up", "endpoint", l.ep.addr, "cause", why.String(), "err", err,
		"next", c.next, "in", at.Sub(now))
}

// pastOpenBreaker handles a redirect (or a rebind) to ep while ep's
// breaker is open: the attempt would go to another member anyway (pick
// skips an open breaker), and a member that names ep as the leader again
// would send the client straight back. So the next attempt asks the members
// in rotation, no sooner than the no-leader retry interval: at most a few
// connections a second while the breaker is open (a client once made
// thousands a second), and a new leader the members name meanwhile is
// found within that interval, without waiting for ep's breaker (a dead
// leader's breaker stays open for its whole open period, 5 s by default).
func (c *Conn) pastOpenBreaker(ep *endpoint, at, now time.Time) time.Time {
	if !ep.open {
		return at
	}
	c.next = ""
	return later(at, now.Add(c.opts.leaderRetry))
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// bound runs when the session is bound to l: it resends everything pending.
func (c *Conn) bound(l *link, now time.Time) {
	c.heard(l, now)
	l.ready = true
	c.retry = retryState{}
	c.kaUnanswered = 0
	c.kaNext = now.Add(c.kaInterval)
	c.setState(StateConnected)
	c.emit(Event{Type: EventConnected, Endpoint: l.ep.addr})
	c.log.Info("client: session bound", "endpoint", l.ep.addr)
	if c.dialPending {
		c.dialPending = false
		c.ready <- nil
	}
}
