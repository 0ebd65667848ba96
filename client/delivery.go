package client

import (
	"bytes"
	"runtime"
	"strconv"
	"time"

	"github.com/zraft/zraft/codec"
)

// Delivery of server requests and events to the application. Each has its
// own goroutine, so that a slow handler never blocks the event loop.

func (c *Conn) onServerRequest(m *codec.ServerRequest) {
	r := ServerRequest{ID: m.RequestID, CreatedAt: time.Unix(0, m.CreatedAt), Payload: m.Payload}
	if c.order.offer(r) == offerDuplicate {
		// The server missed our acknowledgement; repeat it.
		_ = c.send(&codec.ServerRequestAck{RequestID: c.order.acked})
	}
}

// deliver moves server requests that are next in order into the delivery
// buffer and, in ack-on-receipt mode, acknowledges them. In manual-ack mode
// it delivers only while fewer than the in-flight limit are unfinished, and
// acknowledgements follow the application's Acks (onAck). It runs after
// every event so that room freed by the consumer is used without the server
// having to resend.
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
	if r := c.order.room(); r >= 0 {
		room = min(room, r)
	}
	batch := c.order.take(room)
	if len(batch) == 0 {
		return
	}
	manual := c.order.manual > 0
	for _, r := range batch {
		if manual {
			r.ack = &acker{c: c, id: r.ID}
		}
		if c.srCh != nil {
			c.srCh <- r
		} else {
			c.log.Debug("client: server request dropped: no handler", "id", r.ID)
		}
	}
	if !manual {
		_ = c.send(&codec.ServerRequestAck{RequestID: c.order.acked})
	}
}

// ackDone hands the application's acknowledgement of id to the loop. It
// returns the Conn's terminal error when the loop has exited.
func (c *Conn) ackDone(id uint64) error {
	select {
	case c.ops <- op{kind: opAck, id: id}:
		return nil
	case <-c.done:
		return c.termErr
	}
}

// onAck records that the application finished id (manual-ack mode) and
// acknowledges every request up to the new cumulative id, if it moved. When
// no connection is bound the next keep-alive carries it.
func (c *Conn) onAck(id uint64) {
	if !c.order.markDone(id) {
		return
	}
	if l := c.link; l != nil && l.ready {
		_ = c.send(&codec.ServerRequestAck{RequestID: c.order.acked})
	}
}

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

// deliverServerRequests is the goroutine that hands server requests to the
// application, in order.
func (c *Conn) deliverServerRequests() {
	defer c.srWG.Done()
	c.srGoroutine.Store(goid())
	for r := range c.srCh {
		select {
		case <-c.closing:
			return
		default:
		}
		if c.opts.srHandler != nil {
			c.opts.srHandler(r)
			// In manual-ack mode the handler's return acknowledges; an
			// error means the Conn ended and the loop below sees closing.
			_ = r.Ack()
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
	defer c.evWG.Done()
	c.evGoroutine.Store(goid())
	for ev := range c.evCh {
		c.opts.eventHandler(ev)
	}
}

// goid returns the id of the calling goroutine, read from the first line of
// its stack trace ("goroutine 42 [running]:"). Close uses it only to tell
// whether it runs on one of the Conn's handler goroutines, which it must not
// wait for; the id is never used to store state.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
