package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/fsm"
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
	log      *slog.Logger
	jobs     chan job
	wg       sync.WaitGroup
	inFlight atomic.Int64

	// Linearizable reads are batched: each of readRounds readers takes every
	// read queued so far and serves them with one ReadIndex round. A read
	// queued while a round is in flight joins the next round, so each read
	// is served at an index at least as new as when it arrived.
	reads *batcher[pendingRead]
	// Client requests are batched the same way: each of proposeRounds
	// proposers takes what is queued (at most maxRequestBatch requests or
	// maxBatchBytes of payload) and proposes it as one fsm.Batch entry.
	// Taking a batch and queuing it in dragonboat happen under one lock
	// (batcher.order), so batches enter the log in arrival order and one
	// session's requests are applied in the order its actor sent them;
	// waiting for the outcome happens outside it, so up to proposeRounds
	// batches are in flight at once.
	requests *batcher[pendingRequest]
	now      func() time.Time
}

type pendingRequest struct {
	system  *actor.ActorSystem
	req     fsm.ClientRequest
	replyTo *actor.PID
	tag     any
}

type pendingRead struct {
	system  *actor.ActorSystem
	query   any
	replyTo *actor.PID
	tag     any
}

const (
	// readRounds is how many ReadIndex rounds may be in flight at once.
	readRounds = 4
	// maxReadBatch bounds the reads one round serves.
	maxReadBatch = 4096
	// proposeRounds is how many batches of client requests may be in
	// Raft at once.
	proposeRounds = 8
	// maxRequestBatch bounds the requests in one batch (the state machine's
	// MaxBatch must be at least this).
	maxRequestBatch = 1024
	// maxBatchBytes bounds the payload bytes of one batch (a single larger
	// request still goes alone).
	maxBatchBytes = 1 << 20
)

// batcher queues items and has servers goroutines each take what is
// queued and serve it as one batch. Its queue is bounded by Work's
// admission (calls in flight).
//
// Serving has two phases: start, which runs while the server holds order,
// from taking the batch off the queue until start returns, and the wait it
// returns, which runs after order is released. Batches are therefore
// started in the order their items were queued, while several wait at once:
// for client requests, start hands the batch to dragonboat (whose queue
// order is log order), so a session's requests enter the log in the order
// they arrived, however many batches are in flight.
type batcher[T any] struct {
	mu    sync.Mutex // guards queue
	queue []T
	ready chan struct{} // capacity 1: "something is queued"
	order sync.Mutex    // held from taking a batch until it is started
	take  func(q []T) int
	start func(batch []T) (wait func())
	fail  func(batch []T)
}

func newBatcher[T any](w *Work, servers int, take func([]T) int, start func([]T) func(), fail func([]T)) *batcher[T] {
	b := &batcher[T]{ready: make(chan struct{}, 1), take: take, start: start, fail: fail}
	for i := 0; i < servers; i++ {
		w.wg.Add(1)
		go b.run(w.ctx, &w.wg)
	}
	return b
}

func (b *batcher[T]) add(item T) {
	b.mu.Lock()
	b.queue = append(b.queue, item)
	b.mu.Unlock()
	b.signal()
}

func (b *batcher[T]) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// run serves batches until ctx ends; what is still queued then is failed.
func (b *batcher[T]) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-b.ready:
		case <-ctx.Done():
			b.mu.Lock()
			q := b.queue
			b.queue = nil
			b.mu.Unlock()
			b.fail(q)
			return
		}
		if wait := b.startNext(); wait != nil {
			wait()
		}
	}
}

// startNext takes the next batch and starts it, both under order, and
// returns what is left to do (nil when nothing was queued).
func (b *batcher[T]) startNext() func() {
	b.order.Lock()
	defer b.order.Unlock()
	batch := b.next()
	if len(batch) == 0 {
		return nil
	}
	return b.start(batch)
}

// next removes the next batch, and wakes another server if more remain.
func (b *batcher[T]) next() []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.take(b.queue)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	if len(b.queue) > 0 {
		b.signal()
	} else {
		b.queue = nil
	}
	return batch
}

type job struct {
	system  *actor.ActorSystem
	replyTo *actor.PID
	call    func(context.Context) any
	fail    func(error) any // the reply when call panicked
}

// NewWork returns a pool for raft's calls. Cancelling ctx refuses new calls
// and ends the ones in flight; then Wait returns once every worker is gone.
func NewWork(ctx context.Context, raft Raft, maxInFlight int, timeout time.Duration, m *Metrics, log *slog.Logger) *Work {
	w := &Work{ctx: ctx, raft: raft, max: int64(maxInFlight), timeout: timeout, metrics: m, log: log,
		jobs: make(chan job), now: time.Now}
	w.reads = newBatcher(w, readRounds, func(q []pendingRead) int { return min(len(q), maxReadBatch) },
		func(batch []pendingRead) func() { return func() { w.serveReads(batch) } }, w.failReads)
	w.requests = newBatcher(w, proposeRounds, takeRequests, w.startRequests, w.failRequests)
	return w
}

// UseClock makes Work stamp the batches it proposes with now instead of
// time.Now: the node passes the clock its actors use (Env.Now), so a node's
// proposals carry one clock. Call it before the first request.
func (w *Work) UseClock(now func() time.Time) { w.now = now }

func (w *Work) serveReads(batch []pendingRead) {
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	queries := make([]any, len(batch))
	for i, r := range batch {
		queries[i] = r.query
	}
	var results []any
	var errs []error
	var err error
	func() {
		defer w.recovered(func(e error) { err = e })
		results, errs, err = w.raft.ReadBatch(ctx, queries)
	}()
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

func (w *Work) failReads(q []pendingRead) {
	for _, r := range q {
		w.inFlight.Add(-1)
		r.system.Root.Send(r.replyTo, &ReadDone{Tag: r.tag, Err: ErrUnavailable})
	}
}

// takeRequests decides how many queued requests go into the next batch.
func takeRequests(q []pendingRequest) int {
	n, size := 0, 0
	for n < len(q) && n < maxRequestBatch {
		size += len(q[n].req.Payload)
		if n > 0 && size > maxBatchBytes {
			break
		}
		n++
	}
	return n
}

// startRequests queues a batch of client requests for replication as one
// log entry (a single request as a plain ClientRequest) and returns the wait
// for its outcome, which answers each request; or answers them all at once
// and returns nil when the batch could not be queued. It runs under the
// batcher's order, so it must not wait for Raft.
func (w *Work) startRequests(batch []pendingRequest) (wait func()) {
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	failAll := func(err error) {
		cancel()
		for _, p := range batch {
			w.inFlight.Add(-1)
			p.system.Root.Send(p.replyTo, &Proposed{Tag: p.tag, Err: err})
		}
	}
	defer w.recovered(func(err error) { failAll(err); wait = nil })
	now := fsm.Stamp(w.now())
	var cmd []byte
	if len(batch) == 1 {
		q := batch[0].req
		q.Time = now
		cmd = fsm.EncodeCommand(nil, q)
	} else {
		b := fsm.Batch{Time: now, Requests: make([]fsm.ClientRequest, len(batch))}
		for i, p := range batch {
			b.Requests[i] = p.req
		}
		cmd = fsm.EncodeCommand(nil, b)
	}
	start := time.Now()
	prop, err := w.raft.Start(ctx, cmd)
	if err != nil {
		w.metrics.Proposals.WithLabelValues(outcome(err)).Inc()
		failAll(err)
		return nil
	}
	return func() {
		defer cancel()
		var v uint64
		var data []byte
		func() {
			defer w.recovered(func(e error) { err = e })
			v, data, err = prop.Wait(ctx)
		}()
		w.metrics.ProposalSeconds.Observe(time.Since(start).Seconds())
		w.metrics.Proposals.WithLabelValues(outcome(err)).Inc()
		w.answerRequests(batch, v, data, err)
	}
}

// answerRequests sends each request of a batch its own result.
func (w *Work) answerRequests(batch []pendingRequest, v uint64, data []byte, err error) {
	results := []fsm.Result{{Value: v, Data: data}}
	if err == nil && len(batch) > 1 {
		switch fsm.Status(v) {
		case fsm.StatusBatch:
			results, err = fsm.DecodeBatchResult(fsm.Result{Value: v, Data: data})
			if err == nil && len(results) != len(batch) {
				err = fmt.Errorf("%w: batch of %d answered with %d results", fsm.ErrMalformed, len(batch), len(results))
			}
		default:
			// The whole batch was refused (StatusInvalid: a broken
			// invariant, since Work never builds one the machine
			// rejects); no request ran.
			err = fmt.Errorf("%w: batch refused: %v %s", fsm.ErrInvalid, fsm.Status(v), data)
		}
	}
	for i, p := range batch {
		reply := &Proposed{Tag: p.tag, Err: err}
		if err == nil {
			reply.Value, reply.Data = results[i].Value, results[i].Data
		}
		w.inFlight.Add(-1)
		p.system.Root.Send(p.replyTo, reply)
	}
}

func (w *Work) failRequests(q []pendingRequest) {
	for _, p := range q {
		w.inFlight.Add(-1)
		p.system.Root.Send(p.replyTo, &Proposed{Tag: p.tag, Err: ErrUnavailable})
	}
}

// ProposeRequest queues a client request for the next batch and sends a
// *Proposed with tag (carrying that request's own result) to replyTo. The
// request's Time is set when its batch is formed. It never blocks.
func (w *Work) ProposeRequest(system *actor.ActorSystem, req fsm.ClientRequest, replyTo *actor.PID, tag any) {
	if !w.admit() {
		w.metrics.Proposals.WithLabelValues("overloaded").Inc()
		system.Root.Send(replyTo, &Proposed{Tag: tag, Err: ErrOverloaded})
		return
	}
	w.requests.add(pendingRequest{system: system, req: req, replyTo: replyTo, tag: tag})
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
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	var reply any
	func() {
		defer w.recovered(func(err error) { reply = j.fail(err) })
		reply = j.call(ctx)
	}()
	// The slot is free before the caller hears back, as in the batch
	// servers, so a caller that counts calls in flight never sees its own.
	w.inFlight.Add(-1)
	j.system.Root.Send(j.replyTo, reply)
}

// ErrInternal reports a broken invariant below the actors (a panic in a
// call to dragonboat); the caller's request failed and may be retried.
var ErrInternal = errors.New("actors: internal error")

// recovered turns a panic in a Work goroutine into an error for the callers
// waiting on it (fail), logs it and counts it as a supervisor event of kind
// "work": a goroutine outside the actor tree must not take the node down.
func (w *Work) recovered(fail func(error)) {
	if p := recover(); p != nil {
		w.metrics.Restarts.WithLabelValues("work", "RecoveredPanic").Inc()
		if w.log != nil {
			w.log.Error("panic in a raft call", "panic", p, "stack", string(debug.Stack()))
		}
		fail(fmt.Errorf("%w: %v", ErrInternal, p))
	}
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
	}, fail: func(err error) any { return &Proposed{Tag: tag, Err: err} }})
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
	w.reads.add(pendingRead{system: system, query: query, replyTo: replyTo, tag: tag})
}
