package client

import (
	"cmp"
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

// callState is where a pending call stands.
type callState int

const (
	// stateNew: in none of the table's queues: just created, or taken to
	// be sent.
	stateNew callState = iota
	// stateDue: to be sent (again) as soon as the session is bound and,
	// for commands, the request window allows.
	stateDue
	// stateInFlight: sent on the current connection; its timer is the
	// request timeout.
	stateInFlight
	// stateWaiting: answered with a retryable refusal; its timer is the
	// end of a backoff delay, after which it becomes due.
	stateWaiting
	// stateBlocked: answered OutOfOrder; it is sent again right after an
	// earlier pending command is sent, or once it is the oldest pending one.
	stateBlocked
)

// call is the loop's record of one pending command or query. Only the event
// loop touches it after it has been handed over.
type call struct {
	id          uint64 // request id (command) or correlation id (query)
	query       bool
	consistency codec.Consistency
	payload     []byte

	state     callState
	count     bool      // the next send uses up an attempt
	counted   bool      // the last send used up an attempt
	attempts  int       // sends counted against the maximum
	sent      bool      // sent at least once, so a command may have executed
	ambiguous bool      // some attempt ended without a definitive answer
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
// pending map: commands in request-id order, queries by correlation id, a
// heap of timers, and the calls due to be sent. Its size is bounded by max;
// it is owned by the event loop.
type pending struct {
	max      int
	cmds     []*call // pending commands, ascending request id
	queries  map[uint64]*call
	lastReq  uint64 // last request id assigned; ids count up from 1
	lastCorr uint64 // last correlation id assigned
	timers   callHeap
	// dueCmds and dueQueries are the calls in stateDue, ascending id; a
	// command leaves dueCmds only when the window lets it be sent.
	dueCmds    []*call
	dueQueries []*call
	blocked    int     // commands in stateBlocked
	scratch    []*call // take's result, reused
}

func newPending(max int) *pending {
	return &pending{max: max, queries: make(map[uint64]*call)}
}

// len is the number of pending calls of both kinds.
func (p *pending) len() int { return len(p.cmds) + len(p.queries) }

// add assigns c the next id of its kind, records it and makes it due, or
// returns ErrOverloaded when the table is full (c then has no id and was
// not sent).
func (p *pending) add(c *call) error {
	if p.len() >= p.max {
		return ErrOverloaded
	}
	c.index = -1
	c.count = true
	if c.query {
		p.lastCorr++
		c.id = p.lastCorr
		p.queries[c.id] = c
	} else {
		p.lastReq++
		c.id = p.lastReq
		p.cmds = append(p.cmds, c) // ids only grow, so the order holds
	}
	p.setDue(c, true)
	return nil
}

func cmpID(a, b *call) int { return cmp.Compare(a.id, b.id) }

// find returns the index of the pending command with request id id.
func (p *pending) find(id uint64) (int, bool) {
	return slices.BinarySearchFunc(p.cmds, id, func(c *call, id uint64) int { return cmp.Compare(c.id, id) })
}

// get returns the pending call with the given id and kind, or nil when the id
// is unknown: answered already (a duplicate) or never assigned.
func (p *pending) get(query bool, id uint64) *call {
	if query {
		return p.queries[id]
	}
	if i, ok := p.find(id); ok {
		return p.cmds[i]
	}
	return nil
}

// remove forgets c and its timer.
func (p *pending) remove(c *call) {
	p.leave(c)
	if c.query {
		delete(p.queries, c.id)
		return
	}
	if i, ok := p.find(c.id); ok {
		p.cmds = slices.Delete(p.cmds, i, i+1)
	}
}

// leave takes c out of whatever its state keeps it in (timer heap, due
// list, blocked count).
func (p *pending) leave(c *call) {
	switch c.state {
	case stateInFlight, stateWaiting:
		if c.index >= 0 {
			heap.Remove(&p.timers, c.index)
		}
	case stateDue:
		list := &p.dueCmds
		if c.query {
			list = &p.dueQueries
		}
		if i, ok := slices.BinarySearchFunc(*list, c, cmpID); ok {
			*list = slices.Delete(*list, i, i+1)
		}
	case stateBlocked:
		p.blocked--
	}
}

// setDue makes c due; count says whether its next send uses up an attempt.
func (p *pending) setDue(c *call, count bool) {
	if c.state == stateDue {
		c.count = count
		return
	}
	p.leave(c)
	c.state, c.count = stateDue, count
	list := &p.dueCmds
	if c.query {
		list = &p.dueQueries
	}
	i, _ := slices.BinarySearchFunc(*list, c, cmpID)
	*list = slices.Insert(*list, i, c)
}

// setTimer moves c to st (stateInFlight or stateWaiting) with its timer at t.
func (p *pending) setTimer(c *call, st callState, t time.Time) {
	p.leave(c)
	c.state, c.deadline = st, t
	heap.Push(&p.timers, c)
}

// block moves command c to stateBlocked.
func (p *pending) block(c *call) {
	p.leave(c)
	c.state, c.count = stateBlocked, false
	p.blocked++
}

// lowestPending is the lowest request id whose answer is still awaited, or
// the next id to be assigned when none is: the server may evict cached
// responses below it.
func (p *pending) lowestPending() uint64 {
	if len(p.cmds) > 0 {
		return p.cmds[0].id
	}
	return p.lastReq + 1
}

// resendAll makes every pending call due, in id order, after the connection
// changed: nothing is in flight any more. Resends caused by a reconnection do
// not use up attempts, except for calls never sent.
func (p *pending) resendAll() {
	for _, c := range p.cmds {
		p.setDue(c, !c.sent)
	}
	for _, c := range p.queries {
		p.setDue(c, !c.sent)
	}
}

// nextDeadline returns the earliest armed timer.
func (p *pending) nextDeadline() (time.Time, bool) {
	if len(p.timers) == 0 {
		return time.Time{}, false
	}
	return p.timers[0].deadline, true
}

// popDue disarms and returns the earliest call whose timer is at or before
// now, or nil. The call keeps its state; the caller moves it on.
func (p *pending) popDue(now time.Time) *call {
	if len(p.timers) == 0 || p.timers[0].deadline.After(now) {
		return nil
	}
	return heap.Pop(&p.timers).(*call)
}

// take removes from the table's queues, and returns in id order, the calls
// to send now: every due query, then the due commands below the window's end
// (lowest pending id + window) merged with the blocked commands that may go:
// those above a command sent in this round, and the oldest pending command.
// Queries come first: they have no order to keep. The calls are left in
// stateNew for the caller to send; the returned slice is reused by the next
// take.
func (p *pending) take(window int) []*call {
	out := p.scratch[:0]
	defer func() { p.scratch = out[:0] }()
	if len(p.dueQueries) == 0 && len(p.dueCmds) == 0 && p.blocked == 0 {
		return nil
	}
	out = append(out, p.dueQueries...)
	clear(p.dueQueries)
	p.dueQueries = p.dueQueries[:0]
	lo := p.lowestPending()
	end := lo + uint64(window)
	if p.blocked == 0 {
		k := 0
		for k < len(p.dueCmds) && p.dueCmds[k].id < end {
			k++
		}
		out = append(out, p.dueCmds[:k]...)
		clear(p.dueCmds[:k])
		p.dueCmds = p.dueCmds[k:]
	} else {
		sentBelow := false
		for _, c := range p.cmds {
			if c.id >= end {
				break
			}
			if c.state == stateDue || c.state == stateBlocked && (sentBelow || c.id == lo) {
				p.leave(c)
				out = append(out, c)
				sentBelow = true
			}
		}
	}
	for _, c := range out {
		c.state = stateNew
	}
	return out
}

// inOrder returns every pending call, commands by ascending request id then
// queries by ascending correlation id.
func (p *pending) inOrder() []*call {
	out := slices.Clone(p.cmds)
	n := len(out)
	for _, c := range p.queries {
		out = append(out, c)
	}
	slices.SortFunc(out[n:], cmpID)
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
