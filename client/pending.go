package client

import (
	"container/heap"
	"slices"
	"time"

	"github.com/zraft/zraft/codec"
)

// Call is an asynchronous command started by Conn.Go. When it completes, the
// Call itself is sent on Done, whose buffer holds exactly that one value.
type Call struct {
	Payload []byte     // the command, as given to Go
	Result  []byte     // the application's result, when Error is nil
	Error   error      // nil on success; see the package errors
	Done    chan *Call // receives the Call when it completes
}

// call is the loop's record of one pending command or query. Only the event
// loop touches it after it has been handed over.
type call struct {
	id          uint64 // request id (command) or correlation id (query)
	query       bool
	consistency codec.Consistency
	payload     []byte

	attempts  int       // sends counted against the maximum
	sent      bool      // sent at least once, so a command may have executed
	ambiguous bool      // some attempt ended without a definitive answer
	waiting   bool      // scheduled for a resend after a backoff delay, not in flight
	deadline  time.Time // when its timer fires (resend timeout or backoff end)
	index     int       // position in the timer heap; -1 when not scheduled
	abandoned bool      // the caller's context ended; nobody waits for it
	lastErr   error     // the last retryable error, reported if attempts run out

	pub *Call // completed through finish
}

// finish completes the call for its caller. The call must already have been
// removed from the pending table.
func (c *call) finish(result []byte, err error) {
	c.pub.Result, c.pub.Error = result, err
	c.pub.Done <- c.pub // never blocks: Done has room for exactly this value
}

// pending is the table of calls awaiting an answer, in the spirit of net/rpc's
// pending map: commands keyed by request id, queries by correlation id, plus a
// heap of timers. Its size is bounded by max; it is owned by the event loop.
type pending struct {
	max      int
	reqs     map[uint64]*call
	queries  map[uint64]*call
	lastReq  uint64 // last request id assigned; ids count up from 1
	lastCorr uint64 // last correlation id assigned
	lowest   uint64 // no pending request id is below this
	timers   callHeap
}

func newPending(max int) *pending {
	return &pending{
		max:     max,
		reqs:    make(map[uint64]*call),
		queries: make(map[uint64]*call),
		lowest:  1,
	}
}

// len is the number of pending calls of both kinds.
func (p *pending) len() int { return len(p.reqs) + len(p.queries) }

// add assigns c the next id of its kind and records it, or returns
// ErrOverloaded when the table is full (c then has no id and was not sent).
func (p *pending) add(c *call) error {
	if p.len() >= p.max {
		return ErrOverloaded
	}
	c.index = -1
	if c.query {
		p.lastCorr++
		c.id = p.lastCorr
		p.queries[c.id] = c
		return nil
	}
	p.lastReq++
	c.id = p.lastReq
	p.reqs[c.id] = c
	return nil
}

// get returns the pending call with the given id and kind, or nil when the id
// is unknown: answered already (a duplicate) or never assigned.
func (p *pending) get(query bool, id uint64) *call {
	if query {
		return p.queries[id]
	}
	return p.reqs[id]
}

// remove forgets c and its timer.
func (p *pending) remove(c *call) {
	p.unschedule(c)
	if c.query {
		delete(p.queries, c.id)
	} else {
		delete(p.reqs, c.id)
	}
}

// lowestPending is the lowest request id whose answer is still awaited, or
// the next id to be assigned when none is: the server may evict cached
// responses below it. Amortised O(1) since the watermark only moves up.
func (p *pending) lowestPending() uint64 {
	for p.lowest <= p.lastReq {
		if _, ok := p.reqs[p.lowest]; ok {
			break
		}
		p.lowest++
	}
	return p.lowest
}

// schedule (re)arms c's timer to fire at t.
func (p *pending) schedule(c *call, t time.Time) {
	c.deadline = t
	if c.index >= 0 {
		heap.Fix(&p.timers, c.index)
		return
	}
	heap.Push(&p.timers, c)
}

// unschedule disarms c's timer, if armed.
func (p *pending) unschedule(c *call) {
	if c.index >= 0 {
		heap.Remove(&p.timers, c.index)
	}
}

// unscheduleAll disarms every timer; used when the connection goes away and
// nothing is in flight any more.
func (p *pending) unscheduleAll() {
	for _, c := range p.timers {
		c.index = -1
		c.waiting = false
	}
	p.timers = p.timers[:0]
}

// nextDeadline returns the earliest armed timer.
func (p *pending) nextDeadline() (time.Time, bool) {
	if len(p.timers) == 0 {
		return time.Time{}, false
	}
	return p.timers[0].deadline, true
}

// popDue disarms and returns the earliest call whose timer is at or before
// now, or nil.
func (p *pending) popDue(now time.Time) *call {
	if len(p.timers) == 0 || p.timers[0].deadline.After(now) {
		return nil
	}
	return heap.Pop(&p.timers).(*call)
}

// inOrder returns every pending call, commands by ascending request id then
// queries by ascending correlation id: the order they are resent in after a
// (re)connection.
func (p *pending) inOrder() []*call {
	out := make([]*call, 0, p.len())
	for _, c := range p.reqs {
		out = append(out, c)
	}
	cmp := func(a, b *call) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	}
	slices.SortFunc(out, cmp)
	n := len(out)
	for _, c := range p.queries {
		out = append(out, c)
	}
	slices.SortFunc(out[n:], cmp)
	return out
}

// callHeap orders calls by deadline for container/heap.
type callHeap []*call

func (h callHeap) Len() int           { return len(h) }
func (h callHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h callHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *callHeap) Push(x any) {
	c := x.(*call)
	c.index = len(*h)
	*h = append(*h, c)
}

func (h *callHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	c.index = -1
	*h = old[:len(old)-1]
	return c
}
