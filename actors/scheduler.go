package actors

import (
	"sync"
	"sync/atomic"
)

// Scheduler runs the actors' mailboxes (it is a protoactor Dispatcher) on
// resident goroutines instead of a new goroutine per activation. protoactor's
// default dispatcher starts a goroutine each time a mailbox goes from empty
// to non-empty, which on a busy node is several times per client request,
// and every such goroutine grows its stack again to the depth of the
// actor's Receive. Here up to resident goroutines stay parked between
// activations (their stacks already grown); an activation that finds none
// parked gets a goroutine of its own, which exits when done, so Schedule
// never blocks and never waits for a busy actor.
//
// The node owns it: Close (after the actors have stopped) ends the resident
// goroutines and waits for every goroutine it started; an activation
// scheduled after Close runs on a goroutine of its own, as protoactor's
// default does.
type Scheduler struct {
	jobs       chan func()
	done       chan struct{}
	closed     atomic.Bool
	mu         sync.Mutex // serialises wg.Add with Close's Wait
	wg         sync.WaitGroup
	resident   atomic.Int32
	maxResid   int32
	throughput int
}

// Defaults the node uses: resident goroutines (enough for the activations
// that overlap on a busy node; more run on goroutines of their own) and
// protoactor's default throughput.
const (
	DefaultResident   = 64
	DefaultThroughput = 300
)

// NewScheduler returns a scheduler keeping up to resident parked goroutines
// and running at most throughput messages per activation before yielding
// (protoactor's default is 300).
func NewScheduler(resident, throughput int) *Scheduler {
	return &Scheduler{jobs: make(chan func()), done: make(chan struct{}), maxResid: int32(resident), throughput: throughput}
}

// Throughput implements actor.Dispatcher.
func (s *Scheduler) Throughput() int { return s.throughput }

// Schedule implements actor.Dispatcher: fn runs on a parked goroutine if
// one is waiting, else on a new one. It never blocks.
func (s *Scheduler) Schedule(fn func()) {
	select {
	case s.jobs <- fn:
		return
	default:
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		go fn()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.run(fn)
}

// run runs fn and then, while there is room among the resident goroutines,
// stays to run the activations handed to it until Close.
func (s *Scheduler) run(fn func()) {
	defer s.wg.Done()
	fn()
	if s.resident.Add(1) > s.maxResid {
		s.resident.Add(-1)
		return
	}
	defer s.resident.Add(-1)
	for {
		select {
		case fn := <-s.jobs:
			fn()
		case <-s.done:
			return
		}
	}
}

// Close ends the resident goroutines and waits for every goroutine the
// scheduler started to finish its activation. Call it after the actors
// were stopped; it is idempotent.
func (s *Scheduler) Close() {
	s.mu.Lock()
	if !s.closed.Swap(true) {
		close(s.done)
	}
	s.mu.Unlock()
	s.wg.Wait()
}
