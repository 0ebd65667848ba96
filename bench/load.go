package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Errors the Run functions return, besides ErrConfig. When a run fails after
// it started measuring, the Result it returns holds what was measured.
var (
	// ErrInterrupted means the caller's context ended the run early.
	ErrInterrupted = errors.New("bench: interrupted")
	// ErrDial means a client session could not be opened.
	ErrDial = errors.New("bench: dial")
	// ErrPreload means writing the key space before a read benchmark failed.
	ErrPreload = errors.New("bench: preload")
	// ErrBaseline means the in-process dragonboat shard could not be
	// started or stopped.
	ErrBaseline = errors.New("bench: baseline")
	// ErrClose means closing the client sessions failed after the run.
	ErrClose = errors.New("bench: close")
)

// Histogram range and precision: 1 µs to 60 s, 3 significant figures.
const (
	histMinMicros = 1
	histMaxMicros = 60_000_000
	histSigFigs   = 3
)

// errorPause is how long a worker waits after a failed operation, so that a
// broken cluster (every call failing at once) does not turn the load loop
// into a spin that starves the machine it measures.
const errorPause = 10 * time.Millisecond

// preloadTimeout bounds the preloading of the key space as a whole.
const preloadTimeout = 2 * time.Minute

// progressInterval is how often the progress callback is called.
const progressInterval = time.Second

// Phases of a run, as Progress.Phase reports them.
const (
	PhasePreload = "preload"
	PhaseWarmup  = "warmup"
	PhaseMeasure = "measure"
)

// doFunc performs one operation for worker w: a read of key when read is
// true, otherwise a write of value to key. It must not keep value after it
// returns (the worker reuses it). ctx carries the operation's deadline.
type doFunc func(ctx context.Context, w int, read bool, key string, value []byte) error

// runner is the load loop shared by RunZraft and RunBaseline: the system
// under test differs only in do and classify.
type runner struct {
	cfg      Config
	name     string
	do       doFunc
	classify func(error) string
	progress func(Progress)
	keys     []string
	// onWindow, when set, is called once the measuring window is known,
	// before any worker starts; decorate, when set, adds to each Progress.
	onWindow func(start, end time.Time)
	decorate func(*Progress)

	// Shared counters, written by workers and read by the reporter.
	issued      atomic.Uint64 // operations started (warm-up included), for MaxOps
	completed   atomic.Uint64 // operations finished, any phase, for the rate
	measuredOps atomic.Uint64
	measuredErr atomic.Uint64
	// measureStart is the start of measuring in Unix nanoseconds; zero while
	// preloading.
	measureStart atomic.Int64
	started      time.Time
}

// worker is one load goroutine's private state; nothing else touches it
// until the goroutine has ended.
type worker struct {
	id     int
	rng    *rand.Rand
	hist   *hdr.Histogram
	errs   map[string]uint64
	reads  uint64
	writes uint64
	seq    uint64
	value  []byte
}

func newRunner(cfg Config, name string, do doFunc, classify func(error) string, progress func(Progress)) *runner {
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = keyName(i)
	}
	return &runner{cfg: cfg, name: name, do: do, classify: classify, progress: progress, keys: keys}
}

// keyName is the key of index i of the key space.
func keyName(i int) string { return "bench-" + strconv.Itoa(i) }

// valuePrefix marks values written while measuring, followed by the
// worker and its sequence number; preloadPrefix marks preloaded ones.
const (
	valuePrefix   = "w"
	preloadPrefix = "p"
)

// nextValue returns the worker's value buffer filled for its next write:
// "w<worker>-<seq>|" then 'x' up to PayloadSize (cut if PayloadSize is
// smaller), so that a value read back names the write that stored it.
func (w *worker) nextValue(size int) []byte {
	w.seq++
	if w.value == nil {
		w.value = make([]byte, size)
		for i := range w.value {
			w.value[i] = 'x'
		}
	}
	head := fmt.Appendf(nil, "%s%d-%d|", valuePrefix, w.id, w.seq)
	copy(w.value, head)
	return w.value
}

// preloadValue is the value the preload writes to key index i.
func preloadValue(i, size int) []byte {
	v := make([]byte, size)
	for j := range v {
		v[j] = 'x'
	}
	copy(v, fmt.Sprintf("%s%d|", preloadPrefix, i))
	return v
}

// run preloads the key space when reads are asked for, runs the workers
// through warm-up and measuring, and merges what they recorded.
func (r *runner) run(ctx context.Context) (Result, error) {
	r.started = time.Now()
	reporterDone := make(chan struct{})
	stopReporter := make(chan struct{})
	go func() {
		defer close(reporterDone)
		r.report(stopReporter)
	}()
	defer func() {
		close(stopReporter)
		<-reporterDone
	}()

	if r.cfg.ReadRatio > 0 {
		if err := r.preload(ctx); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				err = fmt.Errorf("%w: %w", ErrInterrupted, cerr)
			}
			return Result{Name: r.name, Config: r.cfg, ErrorsByType: map[string]uint64{}}, err
		}
	}

	measureStart := time.Now().Add(r.cfg.Warmup)
	end := measureStart.Add(r.cfg.Duration)
	r.measureStart.Store(measureStart.UnixNano())
	if r.onWindow != nil {
		r.onWindow(measureStart, end)
	}
	// The process's CPU time over the window, read when it opens and
	// closes (after a run that ended early, not at all).
	var cpuAt [2]atomic.Int64
	cpuTimers := []*time.Timer{
		time.AfterFunc(time.Until(measureStart), func() { cpuAt[0].Store(int64(processCPU())) }),
		time.AfterFunc(time.Until(end), func() { cpuAt[1].Store(int64(processCPU())) }),
	}
	defer func() {
		for _, t := range cpuTimers {
			t.Stop()
		}
	}()
	workers := make([]*worker, r.cfg.workers())
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{
			id:   i,
			rng:  rand.New(rand.NewPCG(uint64(i)+1, uint64(r.started.UnixNano()))),
			hist: hdr.New(histMinMicros, histMaxMicros, histSigFigs),
			errs: make(map[string]uint64),
		}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx, w, measureStart, end)
		}()
	}
	wg.Wait()
	if cpuAt[1].Load() == 0 && !time.Now().Before(end) {
		// The workers stopped at end, before the timer ran.
		cpuAt[1].Store(int64(processCPU()))
	}
	measured := min(max(time.Since(measureStart), 0), r.cfg.Duration)
	res := r.merge(workers, measured)
	if c0, c1 := cpuAt[0].Load(), cpuAt[1].Load(); c0 > 0 && c1 > c0 && res.Ops > 0 {
		res.CPUPerOp = time.Duration(c1-c0) / time.Duration(res.Ops)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("%w: %w", ErrInterrupted, err)
	}
	return res, nil
}

// work is one worker's load loop. It ends at end, when MaxOps operations
// were issued, or when ctx ends. Only operations that complete inside
// [measureStart, end] are counted.
func (r *runner) work(ctx context.Context, w *worker, measureStart, end time.Time) {
	for ctx.Err() == nil && r.issued.Add(1) <= r.cfg.MaxOps {
		start := time.Now()
		if !start.Before(end) {
			return
		}
		read := r.cfg.ReadRatio >= 1 || (r.cfg.ReadRatio > 0 && w.rng.Float64() < r.cfg.ReadRatio)
		key := r.keys[w.rng.IntN(len(r.keys))]
		var value []byte
		if !read {
			value = w.nextValue(r.cfg.PayloadSize)
		}
		opCtx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		err := r.do(opCtx, w.id, read, key, value)
		cancel()
		done := time.Now()
		r.completed.Add(1)
		if err != nil && ctx.Err() != nil {
			// The caller interrupted the run; not the system's fault.
			return
		}
		if !done.Before(measureStart) && !done.After(end) {
			if err != nil {
				w.errs[r.classify(err)]++
				r.measuredErr.Add(1)
			} else {
				us := min(max(done.Sub(start).Microseconds(), histMinMicros), histMaxMicros)
				// In range by the clamp above, so RecordValue cannot fail.
				_ = w.hist.RecordValue(us)
				if read {
					w.reads++
				} else {
					w.writes++
				}
				r.measuredOps.Add(1)
			}
		}
		if err != nil {
			pause(ctx, errorPause)
		}
	}
}

// pause sleeps for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// preload writes every key once, with all workers' concurrency, before the
// clock starts. It fails on the first error: reads of a half-written key
// space would be measured as errors.
func (r *runner) preload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, preloadTimeout)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	n := min(r.cfg.workers(), len(r.keys))
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(r.keys) {
					return
				}
				opCtx, opCancel := context.WithTimeout(ctx, r.cfg.Timeout)
				err := r.do(opCtx, w, false, r.keys[i], preloadValue(i, r.cfg.PayloadSize))
				opCancel()
				r.completed.Add(1)
				if err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("%w: key %q: %w", ErrPreload, r.keys[i], err)
						cancel()
					})
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrPreload, err)
	}
	return nil
}

// report calls the progress callback about once per second until stop is
// closed. It runs on its own goroutine, so the callback is never called
// concurrently with itself.
func (r *runner) report(stop <-chan struct{}) {
	if r.progress == nil {
		return
	}
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	last, lastAt := uint64(0), r.started
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			done := r.completed.Load()
			p := Progress{
				Name:     r.name,
				Phase:    PhasePreload,
				Elapsed:  now.Sub(r.started),
				Done:     done,
				Measured: r.measuredOps.Load(),
				Errors:   r.measuredErr.Load(),
			}
			if ms := r.measureStart.Load(); ms != 0 {
				p.Phase = PhaseWarmup
				if !now.Before(time.Unix(0, ms)) {
					p.Phase = PhaseMeasure
				}
			}
			if secs := now.Sub(lastAt).Seconds(); secs > 0 {
				p.Rate = float64(done-last) / secs
			}
			last, lastAt = done, now
			if r.decorate != nil {
				r.decorate(&p)
			}
			r.progress(p)
		}
	}
}

// merge combines the workers' histograms and counters into a Result.
func (r *runner) merge(workers []*worker, measured time.Duration) Result {
	res := Result{Name: r.name, Config: r.cfg, Duration: measured, ErrorsByType: make(map[string]uint64)}
	h := hdr.New(histMinMicros, histMaxMicros, histSigFigs)
	for _, w := range workers {
		// Same range and precision, so Merge drops nothing.
		h.Merge(w.hist)
		res.Reads += w.reads
		res.Writes += w.writes
		for k, n := range w.errs {
			res.ErrorsByType[k] += n
			res.Errors += n
		}
	}
	res.Ops = res.Reads + res.Writes
	if measured > 0 {
		res.Throughput = float64(res.Ops) / measured.Seconds()
	}
	if res.Ops > 0 {
		us := func(q float64) time.Duration { return time.Duration(h.ValueAtQuantile(q)) * time.Microsecond }
		res.P50, res.P90, res.P99, res.P999 = us(50), us(90), us(99), us(99.9)
		res.Max = time.Duration(h.Max()) * time.Microsecond
		res.Curve = curve(h)
	}
	return res
}
