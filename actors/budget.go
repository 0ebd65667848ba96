package actors

import "sync/atomic"

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
