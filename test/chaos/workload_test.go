package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

// The workload: each session loops over random operations on three
// registers (set, get, compare-and-set) and increments of one ledger key.
var registerKeys = []string{"r0", "r1", "r2"}

const (
	ledgerKey = "ledger"
	// opTimeout bounds one call. It is far above what a failover should
	// cost, so a call that hits it is an error the checks report.
	opTimeout = 30 * time.Second
	// thinkTime is the pause between a session's operations: it keeps the
	// histories small enough for the linearizability checker and the CPU
	// left to the cluster, while the several sessions together still
	// complete an operation every few milliseconds (the resolution of the
	// measured gaps).
	thinkTime = 15 * time.Millisecond
	// idleThink is the pause of the idle sessions, which live on
	// keep-alives between calls (they are what a session-expiry bug hits).
	idleThink = 4 * time.Second
	// dialTimeout bounds creating a session.
	dialTimeout = 30 * time.Second
)

type regOp int

const (
	opSet regOp = iota
	opGet
	opCAS
)

func (o regOp) String() string { return [...]string{"set", "get", "cas"}[o] }

// regInput is a register operation.
type regInput struct {
	op       regOp
	value    string // set, cas: the new value
	expected string // cas
}

// regOutput is what a register operation returned.
type regOutput struct {
	unknown  bool   // no definite answer: the write may or may not have happened
	value    string // get: the value, "" when not found
	mismatch bool   // cas: the value was another
	notFound bool   // cas: the key had no value
}

// record is one register operation in the history.
type record struct {
	session   int
	key       string
	in        regInput
	out       regOutput
	call, ret time.Time // ret is zero for unknown outcomes (pending forever)
}

// clientErr is an error a call returned to its caller.
type clientErr struct {
	at      time.Time
	session int
	what    string
	err     error
}

// debugLog, when set (-chaos.debug-log), is where the workload's clients
// log, next to the nodes.
var debugLog *slog.Logger

// incrRecord is an acknowledged increment: the ledger moved from value-delta
// to value.
type incrRecord struct {
	delta, value int64
}

// history gathers what every session observed.
type history struct {
	mu        sync.Mutex
	start     time.Time
	ops       []record
	successes []time.Time // completion time of every successful call
	// bySession holds the same per session, in order.
	bySession map[int][]time.Time
	acked     int64 // sum of acknowledged increments
	unknown   int64 // sum of increments with unknown outcome
	incrs     []incrRecord
	errs      []clientErr
	lost      []clientErr // sessions lost (EventSessionLost)
	dials     int
	total     int
}

func newHistory() *history { return &history{start: time.Now(), bySession: map[int][]time.Time{}} }

func (h *history) success(session int, at time.Time) {
	h.successes = append(h.successes, at)
	h.bySession[session] = append(h.bySession[session], at)
	h.total++
}

// stall returns the longest time within [from, to] that one busy session
// (one that completed a call at least every second before from) went
// without a successful call, and which session that was.
func (h *history) stall(from, to time.Time, busy int) (time.Duration, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var longest time.Duration
	who := -1
	for id := 0; id < busy; id++ {
		if g := maxGap(h.bySession[id], from, to); g > longest {
			longest, who = g, id
		}
	}
	return longest, who
}

func (h *history) addErr(session int, what string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, clientErr{at: time.Now(), session: session, what: what, err: err})
}

// sortedSuccesses returns the completion times in order.
func (h *history) sortedSuccesses() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := append([]time.Time(nil), h.successes...)
	sort.Slice(s, func(i, j int) bool { return s[i].Before(s[j]) })
	return s
}

// workload runs sessions against endpoints until stop is called.
type workload struct {
	endpoints []string
	h         *history
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	seed      int64
}

// startWorkload starts busy sessions (an operation every thinkTime) and
// idle ones (every idleThink).
func startWorkload(endpoints []string, busy, idle int, seed int64) *workload {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workload{endpoints: endpoints, h: newHistory(), ctx: ctx, cancel: cancel, seed: seed}
	for i := 0; i < busy+idle; i++ {
		w.wg.Add(1)
		think := thinkTime
		if i >= busy {
			think = idleThink
		}
		go w.session(i, think)
	}
	return w
}

// stop ends the workload: every session finishes its current call (which
// keeps its own deadline, so no outcome is made ambiguous by stopping) and
// closes its connection.
func (w *workload) stop() *history {
	w.cancel()
	w.wg.Wait()
	return w.h
}

// session is one client: it dials, runs operations, and when its session is
// lost records that and dials a new one.
func (w *workload) session(id int, think time.Duration) {
	defer w.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(w.seed), uint64(id)))
	seq := 0
	for w.ctx.Err() == nil {
		conn, err := w.dial(id)
		if err != nil {
			if w.ctx.Err() == nil {
				w.h.addErr(id, "dial", err)
				sleep(w.ctx, time.Second)
			}
			continue
		}
		last := map[string]string{}
		for w.ctx.Err() == nil && conn.State() != client.StateSessionLost && conn.State() != client.StateClosed {
			seq++
			w.one(conn, id, rng, last, seq)
			sleep(w.ctx, think)
		}
		_ = conn.Close()
	}
}

func (w *workload) dial(id int) (*client.Conn, error) {
	ctx, cancel := context.WithTimeout(w.ctx, dialTimeout)
	defer cancel()
	w.h.mu.Lock()
	w.h.dials++
	w.h.mu.Unlock()
	// The session id goes into the record of a lost session, to find it
	// in a debug log (-chaos.debug-log).
	var dialled atomic.Pointer[client.Conn]
	opts := []client.Option{}
	if debugLog != nil {
		opts = append(opts, client.WithLogger(debugLog.With("client", id)))
	}
	conn, err := client.Dial(ctx, w.endpoints, append(opts, client.WithEventHandler(func(ev client.Event) {
		if ev.Type == client.EventSessionLost {
			what := "session lost"
			if c := dialled.Load(); c != nil {
				sid := c.SessionID()
				what = fmt.Sprintf("session %x lost", sid[:])
			}
			w.h.mu.Lock()
			w.h.lost = append(w.h.lost, clientErr{at: ev.Time, session: id, what: what, err: ev.Err})
			w.h.mu.Unlock()
		}
	}))...)
	dialled.Store(conn)
	return conn, err
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// one runs one random operation and records it.
func (w *workload) one(conn *client.Conn, id int, rng *rand.Rand, last map[string]string, seq int) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	key := registerKeys[rng.IntN(len(registerKeys))]
	value := fmt.Sprintf("s%d-%d", id, seq)
	switch p := rng.IntN(100); {
	case p < 30:
		delta := int64(1 + rng.IntN(5))
		call := time.Now()
		res, err := conn.Submit(ctx, kv.EncodeIncr(ledgerKey, delta))
		now := time.Now()
		w.h.mu.Lock()
		defer w.h.mu.Unlock()
		if err != nil {
			w.h.unknown += delta
			w.h.errs = append(w.h.errs, clientErr{at: now, session: id, what: fmt.Sprintf("incr %d (called %s)", delta, call.Format(tsFormat)), err: err})
			return
		}
		v, derr := kv.DecodeIncrResult(res)
		if derr != nil {
			w.h.errs = append(w.h.errs, clientErr{at: now, session: id, what: "incr result", err: derr})
			w.h.unknown += delta
			return
		}
		w.h.acked += delta
		w.h.incrs = append(w.h.incrs, incrRecord{delta: delta, value: v})
		w.h.success(id, now)
	case p < 55:
		call := time.Now()
		res, err := conn.Query(ctx, kv.EncodeGet(key))
		now := time.Now()
		out := regOutput{}
		if err == nil {
			v, _, derr := kv.DecodeGetResult(res)
			out.value, err = string(v), derr
		} else if appErrIs(err, kv.ErrNotFound) {
			err = nil
		}
		w.h.mu.Lock()
		defer w.h.mu.Unlock()
		if err != nil {
			// A failed read changed nothing: it is left out of the history.
			w.h.errs = append(w.h.errs, clientErr{at: now, session: id, what: "get " + key, err: err})
			return
		}
		last[key] = out.value
		w.h.ops = append(w.h.ops, record{session: id, key: key, in: regInput{op: opGet}, out: out, call: call, ret: now})
		w.h.success(id, now)
	case p < 80 || last[key] == "":
		in := regInput{op: opSet, value: value}
		w.write(conn, ctx, id, key, in, kv.EncodeSet(key, []byte(value)))
		last[key] = value
	default:
		in := regInput{op: opCAS, value: value, expected: last[key]}
		w.write(conn, ctx, id, key, in, kv.EncodeCompareAndSet(key, []byte(in.expected), []byte(value)))
		last[key] = "" // read again before the next cas
	}
}

func (w *workload) write(conn *client.Conn, ctx context.Context, id int, key string, in regInput, cmd []byte) {
	call := time.Now()
	_, err := conn.Submit(ctx, cmd)
	now := time.Now()
	out := regOutput{}
	switch {
	case err == nil:
	case appErrIs(err, kv.ErrMismatch):
		out.mismatch, err = true, nil
	case appErrIs(err, kv.ErrNotFound):
		out.notFound, err = true, nil
	default:
		// Whatever the error says, the write may have been applied
		// (before a session loss, a timeout, an unknown outcome): it
		// stays pending forever in the history, which is always sound.
		out.unknown = true
	}
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	r := record{session: id, key: key, in: in, out: out, call: call, ret: now}
	if out.unknown {
		r.ret = time.Time{}
		w.h.errs = append(w.h.errs, clientErr{at: now, session: id,
			what: fmt.Sprintf("%s %s=%s (called %s)", in.op, key, in.value, call.Format(tsFormat)), err: err})
	} else {
		w.h.success(id, now)
	}
	w.h.ops = append(w.h.ops, r)
}

const tsFormat = "15:04:05.000"

// appErrIs reports whether err is the kv application error target.
func appErrIs(err error, target error) bool {
	var ae *client.AppError
	if !errors.As(err, &ae) {
		return false
	}
	return errors.Is(kv.ErrorFromCode(ae.Code, ae.Message), target)
}
