package client

import "time"

// ServerRequest is work the replicated application pushed to this client's
// session. IDs are consecutive per session from 1 and are delivered in order,
// each exactly once per Conn.
type ServerRequest struct {
	ID        uint64
	CreatedAt time.Time // cluster time at which the application emitted it
	Payload   []byte    // owned by the receiver
}

// reorder turns the server's at-least-once, possibly out-of-order stream of
// server requests into an in-order, duplicate-free one, and decides what to
// acknowledge. It is owned by the event loop and has no goroutines or clock.
//
// Acknowledgements are cumulative, so the client may only acknowledge an id
// once it holds every id up to it: acked is the highest id handed to the
// delivery buffer, and requests above acked+1 wait in held, a window of at
// most limit ids. A request outside the window is dropped unacknowledged; the
// server resends it.
type reorder struct {
	acked uint64
	held  map[uint64]ServerRequest
	limit int
}

func newReorder(limit int) *reorder {
	return &reorder{held: make(map[uint64]ServerRequest), limit: limit}
}

// offerResult says what the loop does after offering a request.
type offerResult int

const (
	offerHeld      offerResult = iota // stored or dropped; nothing to acknowledge yet
	offerDuplicate                    // already acknowledged: send the acknowledgement again
)

// offer records r. A duplicate of an acknowledged request is reported so that
// the loop re-sends the acknowledgement (the server evidently missed it).
func (o *reorder) offer(r ServerRequest) offerResult {
	switch {
	case r.ID <= o.acked:
		return offerDuplicate
	case r.ID > o.acked+uint64(o.limit):
		return offerHeld
	}
	if _, dup := o.held[r.ID]; !dup {
		o.held[r.ID] = r
	}
	return offerHeld
}

// take removes and returns, in id order, up to room requests that follow
// acked without a gap, and advances acked past them. The loop acknowledges
// the new acked when take returns anything.
func (o *reorder) take(room int) []ServerRequest {
	var out []ServerRequest
	for room > 0 {
		r, ok := o.held[o.acked+1]
		if !ok {
			break
		}
		delete(o.held, r.ID)
		o.acked = r.ID
		out = append(out, r)
		room--
	}
	return out
}

// ready reports whether the next request in order is held, so that take
// would return something given room.
func (o *reorder) ready() bool {
	_, ok := o.held[o.acked+1]
	return ok
}
