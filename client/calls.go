package client

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/transport"
)

// pump sends every call that is due, in id order, when the session is bound:
// commands only within the request window, so that the oldest pending
// command always has room in the server's response cache. It runs after
// every event.
func (c *Conn) pump(now time.Time) {
	l := c.link
	if l == nil || !l.ready {
		return
	}
	for _, cl := range c.pend.take(c.opts.window) {
		if c.link != l {
			return // the connection failed while sending
		}
		c.transmit(cl, now)
	}
}

// transmit sends cl on the current link and arms its resend timer.
func (c *Conn) transmit(cl *call, now time.Time) {
	if cl.count {
		cl.attempts++
	}
	cl.counted = cl.count
	cl.sent = true
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
	c.pend.setTimer(cl, stateInFlight, now.Add(c.opts.requestTimeout))
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

// onCallError applies the retry policy (classify) to an error answer for cl.
func (c *Conn) onCallError(cl *call, code codec.Code, appCode uint32, msg string, leader codec.LeaderHint, now time.Time) {
	err := remoteError(code, appCode, msg)
	switch classify(code) {
	case actionRedirect:
		why, _ := rejectionCause(code, leader.ClientAddr)
		c.giveUp(now, why, err, leader.ClientAddr)
	case actionReconnect:
		c.giveUp(now, causeRebind, err, "")
	case actionLost:
		c.lose(err)
	case actionReorder:
		if cl.query {
			c.pend.remove(cl)
			c.complete(cl, nil, err)
			return
		}
		// Nothing ran; the attempt is given back.
		if cl.counted {
			cl.attempts--
		}
		c.pend.block(cl)
	case actionBackoff:
		cl.lastErr = err
		if ambiguousCode(code) && !cl.query {
			cl.ambiguous = true
		}
		if cl.attempts >= c.opts.maxAttempts {
			c.exhausted(cl)
			return
		}
		c.pend.setTimer(cl, stateWaiting, now.Add(c.opts.backoff.delay(cl.attempts-1, mrand.Float64())))
	default:
		c.pend.remove(cl)
		c.complete(cl, nil, err)
	}
}

// onCallTimer handles a call whose timer fired: the end of a backoff wait,
// or an attempt left unanswered. A request timeout says nothing about the
// connection (keep-alives watch that), so it neither moves the session nor
// counts against the endpoint's breaker: the call is sent again with the same
// id until its attempts run out.
func (c *Conn) onCallTimer(cl *call) {
	if cl.state == stateWaiting {
		c.pend.setDue(cl, true)
		return
	}
	cl.lastErr = ErrTimeout
	if !cl.query {
		cl.ambiguous = true
	}
	if cl.attempts >= c.opts.maxAttempts {
		c.exhausted(cl)
		return
	}
	c.pend.setDue(cl, true)
}
