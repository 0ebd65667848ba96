package client

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/zraft/zraft/codec"
)

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
		c.drain()
		if !c.stopped {
			now := time.Now()
			c.pump(now)
			c.deliver()
			c.flushNoteLost()
		}
	}
}

// drainBurst bounds the events drain handles after the one the loop woke
// for, so that timers and Close are looked at regularly under load.
const drainBurst = 64

// drain handles the calls and frames that are already waiting, before the
// loop pumps, delivers and re-arms its timer once for all of them: under
// load replies arrive in bursts (a batch answered together), and each one
// handled on its own paid for a timer reset and a pump that sent at most
// the one request its reply made room for, where one pump now sends them
// all together (one write for the transport).
func (c *Conn) drain() {
	for range drainBurst {
		if c.stopped {
			return
		}
		select {
		case o := <-c.ops:
			c.handleOp(o, time.Now())
		case in := <-c.inbound:
			c.handleInbound(in, time.Now())
		default:
			return
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

// lossDeadline is when a session that no member has answered for a long
// time is declared lost locally. By twice the session timeout after the last
// answer from any member the cluster has expired it (a new leader grants only
// a short grace beyond the timeout), so waiting longer would only delay the
// inevitable error. While members answer, even only to say that they know no
// leader, the session is never declared lost here: only the cluster's
// verdict (SessionExpired, SessionNotFound on continuation) ends it.
func (c *Conn) lossDeadline() (time.Time, bool) {
	if !c.haveSession || c.sessTimeout <= 0 || c.link != nil && c.link.ready {
		return time.Time{}, false
	}
	return c.lastHeard.Add(2 * c.sessTimeout), true
}

func (c *Conn) handleOp(o op, now time.Time) {
	cl := o.call
	switch o.kind {
	case opAck:
		c.onAck(o.id)
	case opCall:
		if err := c.pend.add(cl); err != nil {
			cl.finish(nil, fmt.Errorf("%w: %d calls pending", err, c.opts.maxPending))
		}
		// pump, after this event, sends it if the window allows.
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
		why := causeTransport
		if l.ready {
			why = causeDropped
		}
		c.giveUp(now, why, in.err, "")
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
			// Notifications sent while the session had no connection
			// here went nowhere.
			c.noteLost = true
		}
	case *codec.SessionRejected:
		c.onRejected(l, m, now)
	case *codec.SessionClosed:
		c.onClosed(l, m, now)
	case *codec.KeepAliveResponse:
		if l.ready {
			c.kaUnanswered = 0
			c.heard(l, now)
		}
	case *codec.ClientResponse:
		if cl := c.answerable(l, false, m.RequestID, now); cl != nil {
			c.pend.remove(cl)
			c.complete(cl, m.Result, nil)
		}
	case *codec.RequestError:
		if cl := c.answerable(l, false, m.RequestID, now); cl != nil {
			c.onCallError(cl, m.Reason, m.AppCode, m.Message, m.Leader, now)
		}
	case *codec.QueryResponse:
		if cl := c.answerable(l, true, m.CorrelationID, now); cl != nil {
			c.pend.remove(cl)
			c.complete(cl, m.Result, nil)
		}
	case *codec.QueryError:
		if cl := c.answerable(l, true, m.CorrelationID, now); cl != nil {
			c.onCallError(cl, m.Reason, m.AppCode, m.Message, m.Leader, now)
		}
	case *codec.ServerRequest:
		if l.ready {
			c.heard(l, now)
			c.onServerRequest(m)
		}
	case *codec.Notification:
		if l.ready {
			c.heard(l, now)
			c.onNotification(m)
		}
	default:
		c.log.Warn("client: unexpected message", "kind", m.Kind())
	}
}

// answerable returns the pending call an answer refers to, or nil for a late
// or duplicate answer, which is ignored.
func (c *Conn) answerable(l *link, query bool, id uint64, now time.Time) *call {
	if !l.ready {
		return nil
	}
	c.heard(l, now)
	cl := c.pend.get(query, id)
	if cl == nil {
		c.log.Debug("client: ignoring late or duplicate answer", "id", id, "query", query)
	}
	return cl
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
	c.heard(l, now)
	err := remoteError(m.Reason, 0, m.Message)
	why, final := rejectionCause(m.Reason, m.Leader.ClientAddr)
	switch {
	case !final:
		c.giveUp(now, why, err, m.Leader.ClientAddr)
	case c.haveSession:
		c.lose(err)
	case m.Reason == codec.CodeSessionExpired || m.Reason == codec.CodeBadSecret:
		// A CreateSession cannot be answered so; ask another member.
		c.giveUp(now, causeRefused, err, "")
	default:
		c.fatal(err)
	}
}

func (c *Conn) onClosed(l *link, m *codec.SessionClosed, now time.Time) {
	c.heard(l, now)
	err := remoteError(m.Reason, 0, m.Message)
	switch m.Reason {
	case codec.CodeClientClosed:
		// Our own close, echoed.
	case codec.CodeSessionExpired:
		if c.haveSession {
			c.lose(err)
		}
	default:
		why, final := rejectionCause(m.Reason, m.Leader.ClientAddr)
		if final {
			// The binding is gone for a reason that says nothing about the
			// session itself: continuing the session tells.
			why = causeRebind
		}
		c.giveUp(now, why, err, m.Leader.ClientAddr)
	}
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
			err := errHandshake
			if l.tc == nil {
				err = fmt.Errorf("%w: dial %s", ErrTimeout, l.ep.addr)
			}
			c.giveUp(now, causeTransport, err, "")
		}
	default:
		if !now.Before(c.kaNext) {
			if c.kaUnanswered >= c.opts.keepAliveMisses {
				c.giveUp(now, causeDropped, errKeepAlive, "")
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
			c.onCallTimer(cl)
		}
	}
}

// lose ends the session: everything pending fails with an error matching
// ErrSessionExpired (and ErrOutcomeUnknown for commands already sent), and
// the loop exits. No new session is created.
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
// records err for calls made from now on. A command that was sent fails with
// an error that also matches ErrOutcomeUnknown: it may have executed.
func (c *Conn) terminate(err error, st State) {
	c.dropLink()
	for _, cl := range c.pend.inOrder() {
		c.pend.remove(cl)
		e := err
		if cl.sent && !cl.query && !errors.Is(err, ErrOutcomeUnknown) {
			e = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		c.complete(cl, nil, e)
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
	if c.noteCh != nil {
		close(c.noteCh)
	}
	close(c.done)
}

func (c *Conn) setState(s State) { c.state.Store(int32(s)) }
