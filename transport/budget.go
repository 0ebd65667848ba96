package transport

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// UnbudgetedFrameBytes is the part of a frame a Router connection may hold
// on its own: a frame body of up to this many bytes takes one exact
// allocation and a larger one starts in a buffer of this size; every body
// byte beyond it is acquired from RouterConfig.MaxReadingBytes before it is
// allocated. A handshake command frame is bounded by it too. Frames being
// read on all connections therefore hold at most MaxConns ×
// UnbudgetedFrameBytes + MaxReadingBytes.
const UnbudgetedFrameBytes = 4 << 10

// readFree is UnbudgetedFrameBytes as the reader uses it.
const readFree = UnbudgetedFrameBytes

// readBudget is the node-wide budget of bytes of frames being read. It is a
// FIFO weighted semaphore whose waiters give up when their connection
// closes (including by the frame-read timeout), so a reader that cannot get
// bytes stops reading its connection (TCP pushes back on the peer) for at
// most FrameReadTimeout.
type readBudget struct {
	limit int64

	mu      sync.Mutex
	used    int64
	waiters []*budgetWaiter // at most one per connection

	inUse atomic.Int64  // used, readable without mu
	waits atomic.Uint64 // acquisitions that had to wait
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when the bytes are granted
}

// acquire takes n bytes (n ≤ limit), waiting behind earlier waiters until
// they are free. It returns an error wrapping ErrClosed, without the bytes,
// once quit is closed.
func (b *readBudget) acquire(n int64, quit <-chan struct{}) error {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.limit {
		b.used += n
		b.inUse.Store(b.used)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.waits.Add(1)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-quit:
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while quitting: give the bytes back.
		b.used -= n
	default:
		for i, x := range b.waiters {
			if x == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
	}
	b.grantLocked()
	return fmt.Errorf("%w: while waiting for the reading budget", ErrClosed)
}

// release gives back n bytes and wakes the waiters they now fit.
func (b *readBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked grants waiters in order while the first one fits.
func (b *readBudget) grantLocked() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.limit {
		w := b.waiters[0]
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
	if len(b.waiters) == 0 {
		b.waiters = nil
	}
	b.inUse.Store(b.used)
}

// reading is one Router connection's side of the budget, used only by its
// reading goroutine: the bytes it holds for the frame being read (or
// handed off but not yet released), and the frame-read timeout.
type reading struct {
	budget  *readBudget
	timeout time.Duration
	quit    <-chan struct{} // closed when the connection starts closing
	expire  func()          // closes the connection at the timeout
	held    int64
}

// grow acquires n more bytes for the frame being read.
func (rd *reading) grow(n int) error {
	if err := rd.budget.acquire(int64(n), rd.quit); err != nil {
		return err
	}
	rd.held += int64(n)
	return nil
}

// release gives back what the connection holds, once its frame is handed
// off (or the read failed).
func (rd *reading) release() {
	if rd == nil {
		return
	}
	rd.budget.release(rd.held)
	rd.held = 0
}

// start arms the frame-read timeout for a frame larger than readFree and
// returns its stop, which also waits for the timeout's callback if it has
// fired, so that the reading goroutine owns it.
func (rd *reading) start() (stop func()) {
	fired := make(chan struct{})
	t := time.AfterFunc(rd.timeout, func() {
		defer close(fired)
		rd.expire()
	})
	return func() {
		if !t.Stop() {
			<-fired
		}
	}
}
