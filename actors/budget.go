package actors

import (
	"sync"
	"sync/atomic"
)

// ByteBudget bounds the bytes admitted and not yet released across a node:
// the payloads of client commands and queries between the session actor
// that admits them and the answer it gets back. Its methods are safe from
// any goroutine and never block.
type ByteBudget struct {
	max  int64
	used atomic.Int64
}

// NewByteBudget returns a budget of max bytes (0: unbounded, but counted).
func NewByteBudget(max int64) *ByteBudget { return &ByteBudget{max: max} }

// Take admits n bytes, or reports false (and admits nothing) when they do
// not fit.
func (b *ByteBudget) Take(n int64) bool {
	if b == nil {
		return true
	}
	if b.used.Add(n) > b.max && b.max > 0 {
		b.used.Add(-n)
		return false
	}
	return true
}

// Release gives back n bytes admitted by Take.
func (b *ByteBudget) Release(n int64) {
	if b != nil {
		b.used.Add(-n)
	}
}

// Used returns the bytes admitted and not yet released.
func (b *ByteBudget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Max returns the budget's size (0: unbounded).
func (b *ByteBudget) Max() int64 {
	if b == nil {
		return 0
	}
	return b.max
}

// backlog counts the messages and frame bytes the session directory
// forwarded to one session actor and the actor has not handled yet. Both
// sides share it: the directory adds, the actor marks each message done, and
// the directory closes it when it forgets the session, giving back to the
// node's budget what the stopped actor's mailbox still held (those messages
// are dropped with the mailbox and never marked done). It cannot leak: it
// lives and dies with the directory's entry.
type backlog struct {
	budget *ByteBudget
	mu     sync.Mutex
	n      int64
	bytes  int64
	closed bool
}

func newBacklog(budget *ByteBudget) *backlog { return &backlog{budget: budget} }

// add admits one message of size bytes, or says which bound is reached:
// "backlog" (maxN messages waiting), "session_bytes" (maxBytes waiting;
// 0: none) or "node_bytes" (the node's budget).
func (b *backlog) add(size, maxN, maxBytes int64) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.n >= maxN:
		return "backlog"
	case maxBytes > 0 && b.bytes+size > maxBytes:
		return "session_bytes"
	case b.closed:
		return "backlog"
	case !b.budget.Take(size):
		return "node_bytes"
	}
	b.n++
	b.bytes += size
	return ""
}

// done marks one message of size bytes handled.
func (b *backlog) done(size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.n--
	b.bytes -= size
	b.budget.Release(size)
}

// close gives back what is still waiting; later done calls change nothing.
func (b *backlog) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.budget.Release(b.bytes)
		b.closed = true
	}
}
