package client

import (
	"sync/atomic"
	"time"
)

// ServerRequest is work the replicated application pushed to this client's
// session. IDs are consecutive per session from 1 and are delivered in order,
// each exactly once per Conn.
type ServerRequest struct {
	ID        uint64
	CreatedAt time.Time // cluster time at which the application emitted it
	Payload   []byte    // owned by the receiver

	// ack is set in manual-ack mode (WithManualAck) and shared by every
	// copy of the request, so that Ack takes effect once.
	ack *acker
}

// acker acknowledges one request of a Conn in manual-ack mode.
type acker struct {
	c    *Conn
	id   uint64
	done atomic.Bool
}

// Ack acknowledges the request in manual-ack mode (WithManualAck): it tells
// the Conn that the request is done, and the Conn acknowledges it to the
// cluster as soon as every request with a smaller id is done too
// (acknowledgements are cumulative). Until then the request stays in the
// cluster's replicated queue for this session. A handler given to
// WithServerRequestHandler need not call it (its return acknowledges), but
// may, to acknowledge before it returns; a consumer of WithServerRequests
// must call it for every request, or the in-flight limit stops delivery.
//
// Ack may be called from any goroutine; calls after the first do nothing and
// return nil. In the default ack-on-receipt mode the request was
// acknowledged on receipt and Ack does nothing. After the Conn ended (Close,
// session loss) Ack returns an error matching ErrClosed or ErrSessionExpired:
// the acknowledgement was not sent, and the cluster gives the request to
// another capable session or reports it to the application as dropped.
func (r ServerRequest) Ack() error {
	a := r.ack
	if a == nil || a.done.Swap(true) {
		return nil
	}
	return a.c.ackDone(a.id)
}

// reorder turns the server's at-least-once, possibly out-of-order stream of
// server requests into an in-order, duplicate-free one, and decides what to
// acknowledge. It is owned by the event loop and has no goroutines or clock.
//
// Acknowledgements are cumulative, so the client may only acknowledge an id
// once every id up to it is acknowledgeable. delivered is the highest id
// handed to the delivery buffer, acked the highest id acknowledged. In
// ack-on-receipt mode both move together: a request is acknowledged when it
// is delivered. In manual mode (manual > 0) acked trails delivered: ids in
// (acked, delivered] are with the application, done holds those it finished
// out of order, and at most manual of them are unfinished at a time.
// Requests above delivered+1 wait in held, a window of at most limit ids; a
// request outside the window is dropped unacknowledged and the server
// resends it.
type reorder struct {
	acked     uint64
	delivered uint64
	held      map[uint64]ServerRequest
	limit     int
	manual    int
	done      map[uint64]struct{}
}

func newReorder(limit, manual int) *reorder {
	o := &reorder{held: make(map[uint64]ServerRequest), limit: limit, manual: manual}
	if manual > 0 {
		o.done = make(map[uint64]struct{})
	}
	return o
}

// offerResult says what the loop does after offering a request.
type offerResult int

const (
	offerHeld      offerResult = iota // stored or dropped; nothing to acknowledge yet
	offerDuplicate                    // already acknowledged: send the acknowledgement again
)

// offer records r. A duplicate of an acknowledged request is reported so that
// the loop re-sends the acknowledgement (the server evidently missed it); a
// duplicate of a request the application still works on is dropped: the
// server resends unacknowledged work until it is acknowledged.
func (o *reorder) offer(r ServerRequest) offerResult {
	switch {
	case r.ID <= o.acked:
		return offerDuplicate
	case r.ID <= o.delivered:
		return offerHeld
	case r.ID > o.delivered+uint64(o.limit):
		return offerHeld
	}
	if _, dup := o.held[r.ID]; !dup {
		o.held[r.ID] = r
	}
	return offerHeld
}

// room returns how many more requests may be delivered: in manual mode the
// in-flight limit less the unfinished ones, otherwise unlimited (-1).
func (o *reorder) room() int {
	if o.manual == 0 {
		return -1
	}
	return o.manual - o.unfinished()
}

// unfinished counts the delivered requests the application has not
// acknowledged (always 0 in ack-on-receipt mode).
func (o *reorder) unfinished() int {
	return int(o.delivered-o.acked) - len(o.done)
}

// take removes and returns, in id order, up to room requests that follow
// delivered without a gap, and advances delivered past them (and, in
// ack-on-receipt mode, acked: the loop acknowledges the new acked when take
// returns anything).
func (o *reorder) take(room int) []ServerRequest {
	var out []ServerRequest
	for room > 0 {
		r, ok := o.held[o.delivered+1]
		if !ok {
			break
		}
		delete(o.held, r.ID)
		o.delivered = r.ID
		if o.manual == 0 {
			o.acked = r.ID
		}
		out = append(out, r)
		room--
	}
	return out
}

// markDone records that the application finished id (manual mode) and
// reports whether acked advanced, in which case the loop sends the new
// cumulative acknowledgement.
func (o *reorder) markDone(id uint64) bool {
	if o.manual == 0 || id <= o.acked || id > o.delivered {
		return false
	}
	o.done[id] = struct{}{}
	moved := false
	for {
		if _, ok := o.done[o.acked+1]; !ok {
			return moved
		}
		delete(o.done, o.acked+1)
		o.acked++
		moved = true
	}
}

// ready reports whether the next request in order is held, so that take
// would return something given room.
func (o *reorder) ready() bool {
	_, ok := o.held[o.delivered+1]
	return ok
}
