package actors

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// workerIdle is how long a pool worker waits for a call before it exits.
const workerIdle = 10 * time.Second

// Work runs the calls that wait on dragonboat (proposals and ReadIndex
// reads) on a pool of worker goroutines, so that no actor ever blocks. It is
// the node's, not an actor's: a restarted actor cannot lose count of calls in
// flight, and Close waits for every worker.
//
// At most MaxProposals calls are in flight; past that a call is refused at
// once with ErrOverloaded. Workers are started on demand (never more than
// calls in flight) and kept while busy: a worker's stack grows once to what
// dragonboat's call path needs, instead of once per call. A worker idle for
// workerIdle exits.
type Work struct {
	ctx      context.Context
	raft     Raft
	max      int64
	timeout  time.Duration
	metrics  *Metrics
	jobs     chan job
	wg       sync.WaitGroup
	inFlight atomic.Int64

	// Linearizable reads are batched: readers (readRounds goroutines) each
	// take every read queued so far and serve them with one ReadIndex round.
	// A read queued while a round is in flight joins the next round, so
	// each read is served at an index at least as new as when it arrived.
	readMu    sync.Mutex
	readQueue []pendingRead
	readReady chan struct{} // signalled (non-blocking, capacity 1) when reads are queued
}

type pendingRead struct {
	system  *actor.ActorSystem
	query   any
	replyTo *actor.PID
	tag     any
}

// readRounds is how many ReadIndex rounds may be in flight at once.
const readRounds = 4

// maxReadBatch bounds the reads one round serves.
const maxReadBatch = 4096

type job struct {
	system  *actor.ActorSystem
	replyTo *actor.PID
	call    func(context.Context) any
}

// NewWork returns a pool for raft's calls. Cancelling ctx refuses new calls
// and ends the ones in flight; then Wait returns once every worker is gone.
func NewWork(ctx context.Context, raft Raft, maxInFlight int, timeout time.Duration, m *Metrics) *Work {
	w := &Work{ctx: ctx, raft: raft, max: int64(maxInFlight), timeout: timeout, metrics: m,
		jobs: make(chan job), readReady: make(chan struct{}, 1)}
	for i := 0; i < readRounds; i++ {
		w.wg.Add(1)
		go w.reader()
	}
	return w
}

// reader serves batches of linearizable reads until the context ends; reads
// still queued then are answered ErrUnavailable.
func (w *Work) reader() {
	defer w.wg.Done()
	for {
		select {
		case <-w.readReady:
		case <-w.ctx.Done():
			w.failQueued()
			return
		}
		batch := w.takeReads()
		if len(batch) == 0 {
			continue
		}
		w.serveReads(batch)
	}
}

// takeReads removes up to maxReadBatch queued reads, and wakes another
// reader if more remain.
func (w *Work) takeReads() []pendingRead {
	w.readMu.Lock()
	defer w.readMu.Unlock()
	n := min(len(w.readQueue), maxReadBatch)
	batch := w.readQueue[:n:n]
	w.readQueue = w.readQueue[n:]
	if len(w.readQueue) > 0 {
		w.signalReads()
	} else {
		w.readQueue = nil
	}
	return batch
}

func (w *Work) signalReads() {
	select {
	case w.readReady <- struct{}{}:
	default:
	}
}

func (w *Work) serveReads(batch []pendingRead) {
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	queries := make([]any, len(batch))
	for i, r := range batch {
		queries[i] = r.query
	}
	results, errs, err := w.raft.ReadBatch(ctx, queries)
	for i, r := range batch {
		done := &ReadDone{Tag: r.tag, Err: err}
		if err == nil {
			done.Result, done.Err = results[i], errs[i]
		}
		w.metrics.Reads.WithLabelValues(outcome(done.Err)).Inc()
		w.inFlight.Add(-1)
		r.system.Root.Send(r.replyTo, done)
	}
}

func (w *Work) failQueued() {
	w.readMu.Lock()
	q := w.readQueue
	w.readQueue = nil
	w.readMu.Unlock()
	for _, r := range q {
		w.inFlight.Add(-1)
		r.system.Root.Send(r.replyTo, &ReadDone{Tag: r.tag, Err: ErrUnavailable})
	}
}

// Wait blocks until every worker has exited (after ctx is cancelled).
func (w *Work) Wait() { w.wg.Wait() }

// InFlight returns the number of calls admitted and not yet answered.
func (w *Work) InFlight() int64 { return w.inFlight.Load() }

func (w *Work) admit() bool {
	if w.inFlight.Add(1) > w.max || w.ctx.Err() != nil {
		w.inFlight.Add(-1)
		return false
	}
	return true
}

// submit hands j to an idle worker, or starts one.
func (w *Work) submit(j job) {
	select {
	case w.jobs <- j:
	default:
		w.wg.Add(1)
		go w.worker(j)
	}
}

func (w *Work) worker(j job) {
	defer w.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		w.do(j)
		idle.Reset(workerIdle)
		select {
		case j = <-w.jobs:
		case <-idle.C:
			return
		case <-w.ctx.Done():
			return
		}
	}
}

func (w *Work) do(j job) {
	defer w.inFlight.Add(-1)
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	j.system.Root.Send(j.replyTo, j.call(ctx))
}

// Propose replicates cmd and sends a *Proposed with tag to replyTo. It never
// blocks.
func (w *Work) Propose(system *actor.ActorSystem, cmd []byte, replyTo *actor.PID, tag any) {
	if !w.admit() {
		w.metrics.Proposals.WithLabelValues("overloaded").Inc()
		system.Root.Send(replyTo, &Proposed{Tag: tag, Err: ErrOverloaded})
		return
	}
	w.submit(job{system: system, replyTo: replyTo, call: func(ctx context.Context) any {
		start := time.Now()
		v, data, err := w.raft.Propose(ctx, cmd)
		w.metrics.ProposalSeconds.Observe(time.Since(start).Seconds())
		w.metrics.Proposals.WithLabelValues(outcome(err)).Inc()
		return &Proposed{Tag: tag, Value: v, Data: data, Err: err}
	}})
}

// Read looks query up and sends a *ReadDone with tag to replyTo: in the next
// batched ReadIndex round, or, when stale, from the local applied state at
// once. It never blocks.
func (w *Work) Read(system *actor.ActorSystem, query any, stale bool, replyTo *actor.PID, tag any) {
	if stale {
		res, err := w.raft.StaleRead(query)
		w.metrics.Reads.WithLabelValues("stale_" + outcome(err)).Inc()
		system.Root.Send(replyTo, &ReadDone{Tag: tag, Result: res, Err: err})
		return
	}
	if !w.admit() {
		w.metrics.Reads.WithLabelValues("overloaded").Inc()
		system.Root.Send(replyTo, &ReadDone{Tag: tag, Err: ErrOverloaded})
		return
	}
	w.readMu.Lock()
	w.readQueue = append(w.readQueue, pendingRead{system: system, query: query, replyTo: replyTo, tag: tag})
	w.readMu.Unlock()
	w.signalReads()
}
