package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

// HotKey is the key RunWatch's watchers follow and its hot writer writes;
// it lies outside the key space of the other writes ("bench-<i>").
const HotKey = "bench-hot"

// catchUpTimeout bounds how long RunWatch waits, after measuring, for every
// watcher to have received the hot key's last change.
const catchUpTimeout = 30 * time.Second

// WatchResult is what one RunWatch measured.
type WatchResult struct {
	// Watchers is the number of sessions watching HotKey.
	Watchers int
	// Others is the write (and read) workload on the other keys, measured
	// at the same time (RunZraft's figures).
	Others Result
	// HotWrites counts successful writes to HotKey completed while
	// measuring; HotWriteRate is per second.
	HotWrites    uint64
	HotWriteRate float64
	// Notifications counts watch events delivered to the watchers while
	// measuring; NotificationRate is per second. Watch notifications are
	// leader-only and not acknowledged (docs/kv.md §6); a hot key's
	// notifications are coalesced when the leader's relay is behind, so
	// a watcher may receive fewer events than there were writes.
	Notifications    uint64
	NotificationRate float64
	// Resyncs counts, among Notifications, the events marked Resync: a
	// watcher saw a gap (a notification lost or coalesced) and was given
	// the key's newer state.
	Resyncs uint64
	// CancelledWatches is how many watches the store cancelled during the
	// run (kv stats, cluster-wide); always 0 since watches stopped using
	// server-request queues, kept to show it.
	CancelledWatches uint64
	// CatchUp is how long after the last hot write every watcher had
	// received it (0 when there are no watchers); CaughtUp is false when
	// that did not happen within 30 s.
	CatchUp  time.Duration
	CaughtUp bool
	// LostWatches counts watches that ended before the run did (the
	// session was lost, or the watch's buffer overflowed); their watchers
	// stop receiving, so CaughtUp is false when any was lost.
	LostWatches int
}

// RunWatch measures fan-out: cfg.Watchers sessions watch HotKey while one
// more session keeps cfg.HotInFlight writes to HotKey in flight and the
// usual workload (cfg.Sessions × cfg.InFlight operations over cfg.Keys
// other keys, RunZraft's) runs beside them. It reports the notifications
// the watchers receive, the hot key's write rate, and the other keys'
// figures, which a run with cfg.Watchers = 0 gives the reference for.
func RunWatch(ctx context.Context, cfg Config, progress func(Progress)) (WatchResult, error) {
	if err := cfg.Validate(); err != nil {
		return WatchResult{}, err
	}
	if len(cfg.Endpoints) == 0 {
		return WatchResult{}, configErr("endpoints must name at least one member's client address")
	}
	res := WatchResult{Watchers: cfg.Watchers}
	hcfg := cfg
	hcfg.Sessions = 1
	hotConn, err := dialAll(ctx, hcfg)
	if err != nil {
		return res, err
	}
	hot := kv.NewClient(hotConn[0])
	others, err := dialAll(ctx, cfg)
	if err != nil {
		return res, errors.Join(err, closeAll(hotConn))
	}
	// The stats query is retried: right after a heavy fan-out it can
	// outlast one operation timeout.
	stats := func() (st kv.Stats, err error) {
		for range 3 {
			sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			st, err = hot.Stats(sctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				return st, err
			}
		}
		return st, err
	}

	// The window is set once the runner knows it; events and writes
	// before and after it are not counted.
	var winStart, winEnd atomic.Int64
	inWindow := func(t time.Time) bool {
		s := winStart.Load()
		return s != 0 && t.UnixNano() >= s && t.UnixNano() <= winEnd.Load()
	}
	var notes, resyncs atomic.Uint64
	var lost atomic.Int64
	var closing atomic.Bool   // set once cleanup ends the watches
	var lastRev atomic.Uint64 // the hot key's newest revision written
	seen := make([]atomic.Uint64, cfg.Watchers)
	ended := make([]atomic.Bool, cfg.Watchers) // the watch ended early
	watchers := make([]*watcherSession, cfg.Watchers)
	watchErrs := make([]error, cfg.Watchers)
	var watchWG sync.WaitGroup
	var setupWG sync.WaitGroup
	sem := make(chan struct{}, dialParallel)
	for i := range watchers {
		setupWG.Add(1)
		go func() {
			defer setupWG.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ws, err := dialWatcher(ctx, cfg)
			if err != nil {
				watchErrs[i] = err
				return
			}
			watchers[i] = ws
			// The watch lives as long as its context: the run's.
			wt, err := ws.kv.Watch(ctx, HotKey)
			if err != nil {
				watchErrs[i] = fmt.Errorf("%w: watch %d: %w", ErrDial, i, err)
				return
			}
			watchWG.Add(1)
			go func() {
				defer watchWG.Done()
				for ev := range wt.Events() {
					if inWindow(time.Now()) {
						notes.Add(1)
						if ev.Resync {
							resyncs.Add(1)
						}
					}
					seen[i].Store(ev.Revision)
				}
				if !closing.Load() {
					lost.Add(1)
					ended[i].Store(true)
				}
			}()
		}()
	}
	setupWG.Wait()
	cleanup := func() error {
		closing.Store(true)
		var errs []error
		for _, ws := range watchers {
			if ws != nil {
				errs = append(errs, ws.close())
			}
		}
		// Closing a watcher's Client ends its watch and closes Events.
		watchWG.Wait()
		return errors.Join(append(errs, closeAll(hotConn), closeAll(others))...)
	}
	if err := errors.Join(watchErrs...); err != nil {
		return res, errors.Join(err, cleanup())
	}
	before, err := stats()
	if err != nil {
		return res, errors.Join(fmt.Errorf("bench: stats: %w", err), cleanup())
	}

	// The hot writer.
	var hotWrites atomic.Uint64
	hotCtx, stopHot := context.WithCancel(ctx)
	var hotWG sync.WaitGroup
	value := make([]byte, cfg.PayloadSize)
	for i := range value {
		value[i] = 'h'
	}
	for range cfg.HotInFlight {
		hotWG.Add(1)
		go func() {
			defer hotWG.Done()
			for hotCtx.Err() == nil {
				if e := winEnd.Load(); e != 0 && time.Now().UnixNano() > e {
					return
				}
				opCtx, cancel := context.WithTimeout(hotCtx, cfg.Timeout)
				rev, err := hot.Set(opCtx, HotKey, value)
				cancel()
				if err != nil {
					pause(hotCtx, errorPause)
					continue
				}
				for {
					cur := lastRev.Load()
					if rev <= cur || lastRev.CompareAndSwap(cur, rev) {
						break
					}
				}
				if inWindow(time.Now()) {
					hotWrites.Add(1)
				}
			}
		}()
	}

	kvs := make([]*kv.Client, len(others))
	for i, c := range others {
		kvs[i] = kv.NewClient(c)
	}
	r := newRunner(cfg, NameZraft, zraftDo(cfg.InFlight, kvs), zraftErrorType, progress)
	r.onWindow = func(start, end time.Time) {
		winEnd.Store(end.UnixNano())
		winStart.Store(start.UnixNano())
	}
	r.decorate = func(p *Progress) { p.Notifications = notes.Load() }
	res.Others, err = r.run(ctx)
	if err != nil {
		stopHot() // the window may never have been set
	}
	hotWG.Wait()
	stopHot()
	lastWrite := time.Now()
	measured := res.Others.Duration
	res.HotWrites, res.Notifications, res.Resyncs = hotWrites.Load(), notes.Load(), resyncs.Load()
	if measured > 0 {
		res.HotWriteRate = float64(res.HotWrites) / measured.Seconds()
		res.NotificationRate = float64(res.Notifications) / measured.Seconds()
	}
	if err == nil && cfg.Watchers > 0 {
		res.CatchUp, res.CaughtUp = waitCaughtUp(ctx, seen, ended, lastRev.Load(), lastWrite)
	}
	res.LostWatches = int(lost.Load())
	if after, serr := stats(); serr == nil {
		res.CancelledWatches = after.CancelledWatches - before.CancelledWatches
	} else if err == nil {
		err = fmt.Errorf("bench: stats: %w", serr)
	}
	return res, errors.Join(err, cleanup())
}

// waitCaughtUp waits until every watcher whose watch has not ended has
// seen revision rev, at most catchUpTimeout, and says how long after since
// that took; it reports success only if no watch ended.
func waitCaughtUp(ctx context.Context, seen []atomic.Uint64, ended []atomic.Bool, rev uint64, since time.Time) (time.Duration, bool) {
	deadline := since.Add(catchUpTimeout)
	for {
		behind, gone := false, false
		for i := range seen {
			switch {
			case ended[i].Load():
				gone = true
			case seen[i].Load() < rev:
				behind = true
			}
		}
		if !behind {
			return time.Since(since), !gone
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(since), false
		}
		pause(ctx, time.Millisecond)
	}
}

// WriteWatchTable writes watch results as a table, one row per run, and
// for every run with watchers the other keys' write rate relative to the
// first run without watchers.
func WriteWatchTable(w io.Writer, results ...WatchResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "watchers\tother ops/s\tother p50 ms\tother p99 ms\thot writes/s\tnotifications/s\tresyncs\tcancelled watches\tlost watches\tcatch-up ms\t\n")
	for _, r := range results {
		catch := "-"
		switch {
		case r.Watchers > 0 && r.CaughtUp:
			catch = ms(r.CatchUp)
		case r.Watchers > 0:
			catch = "timeout"
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%s\t%s\t%.0f\t%.0f\t%d\t%d\t%d\t%s\t\n", r.Watchers, r.Others.Throughput,
			ms(r.Others.P50), ms(r.Others.P99), r.HotWriteRate, r.NotificationRate, r.Resyncs, r.CancelledWatches, r.LostWatches, catch)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("bench: write table: %w", err)
	}
	var ref *WatchResult
	for i := range results {
		if results[i].Watchers == 0 {
			ref = &results[i]
			break
		}
	}
	for _, r := range results {
		if ref == nil || r.Watchers == 0 || ref.Others.Throughput == 0 {
			continue
		}
		if _, err := fmt.Fprintf(w, "other keys with %d watchers: %.2fx the write rate without watchers\n",
			r.Watchers, r.Others.Throughput/ref.Others.Throughput); err != nil {
			return fmt.Errorf("bench: write table: %w", err)
		}
	}
	return nil
}

// watcherSession is one watching session: a Conn whose notifications and
// events go to a Watcher, and the kv Client that watches through it.
type watcherSession struct {
	conn *client.Conn
	kv   *kv.Client
}

// watcherDialAttempts bounds the attempts to open one watching session:
// opening a thousand at once on a loaded machine can outlast one attempt's
// dialTimeout for a few of them (a leader change in the middle, say).
const watcherDialAttempts = 3

// dialWatcher opens a watching session with a watch buffer deep enough
// that a counting consumer never overflows it, in up to
// watcherDialAttempts attempts.
func dialWatcher(ctx context.Context, cfg Config) (*watcherSession, error) {
	var errs []error
	for range watcherDialAttempts {
		ws, err := dialWatcherOnce(ctx, cfg)
		if err == nil || ctx.Err() != nil {
			return ws, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func dialWatcherOnce(ctx context.Context, cfg Config) (*watcherSession, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	w := kv.NewWatcher(kv.WithWatchBuffer(4096))
	opts := w.ConnOptions()
	if cfg.TLS != nil {
		opts = append(opts, client.WithTLS(cfg.TLS))
	}
	conn, err := client.Dial(dctx, cfg.Endpoints, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDial, err)
	}
	return &watcherSession{conn: conn, kv: kv.NewClient(conn, kv.WithWatcher(w))}, nil
}

// close ends the session's watches and closes its Conn.
func (ws *watcherSession) close() error {
	return errors.Join(ws.kv.Close(), ws.conn.Close())
}

type jsonWatch struct {
	Watchers         int        `json:"watchers"`
	Others           jsonResult `json:"others"`
	HotWrites        uint64     `json:"hot_writes"`
	HotWriteRate     float64    `json:"hot_writes_per_sec"`
	Notifications    uint64     `json:"notifications"`
	NotificationRate float64    `json:"notifications_per_sec"`
	Resyncs          uint64     `json:"resyncs"`
	CancelledWatches uint64     `json:"cancelled_watches"`
	CatchUpMicros    int64      `json:"catch_up_us"`
	CaughtUp         bool       `json:"caught_up"`
	LostWatches      int        `json:"lost_watches"`
}

// WriteWatchJSON writes watch results as {"watch": [...]}, with the other
// keys' figures in WriteJSON's result layout.
func WriteWatchJSON(w io.Writer, results ...WatchResult) error {
	doc := struct {
		Watch []jsonWatch `json:"watch"`
	}{Watch: make([]jsonWatch, 0, len(results))}
	for _, r := range results {
		doc.Watch = append(doc.Watch, jsonWatch{
			Watchers: r.Watchers, Others: toJSON(r.Others), HotWrites: r.HotWrites, HotWriteRate: r.HotWriteRate,
			Notifications: r.Notifications, NotificationRate: r.NotificationRate, Resyncs: r.Resyncs, CancelledWatches: r.CancelledWatches,
			CatchUpMicros: r.CatchUp.Microseconds(), CaughtUp: r.CaughtUp, LostWatches: r.LostWatches,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("bench: write json: %w", err)
	}
	return nil
}
