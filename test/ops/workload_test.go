package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

// session is one Go client session (client.Conn + kv.Client) that
// increments its own counter key and watches the next session's counter.
type session struct {
	i        int
	key      string // the counter it increments
	watchKey string // the counter it watches
	conn     *client.Conn
	kv       *kv.Client
	lost     atomic.Pointer[error] // set by EventSessionLost

	mu      sync.Mutex
	acked   []int64 // values Incr returned, in order
	errs    []error // failed Incr calls
	seen    []int64 // values of watchKey the watch delivered, in order
	resync  []bool  // whether each of them was a Resync (docs/kv.md §6)
	watchOK chan struct{}
	ended   error // why the watch ended early
}

// workload runs sessions until finish.
type workload struct {
	t        *testing.T
	sessions []*session
	stop     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	writers  sync.WaitGroup
	watchers sync.WaitGroup
}

// maxIncrs bounds each session's writes; the pause between them keeps 8
// sessions from saturating two cores.
const (
	maxIncrs   = 20000
	incrPause  = 10 * time.Millisecond
	callBudget = 30 * time.Second
)

// dialSession opens a Go client session on endpoints; onEvent (may be nil)
// sees its events after the kv Watcher.
func dialSession(ctx context.Context, endpoints []string, onEvent func(client.Event)) (*client.Conn, *kv.Client, error) {
	w := kv.NewWatcher()
	conn, err := client.Dial(ctx, endpoints,
		client.WithNotificationHandler(w.HandleNotification),
		client.WithEventHandler(func(ev client.Event) {
			w.HandleEvent(ev)
			if onEvent != nil {
				onEvent(ev)
			}
		}))
	if err != nil {
		return nil, nil, err
	}
	return conn, kv.NewClient(conn, kv.WithWatcher(w)), nil
}

// startWorkload dials n sessions on endpoints; each watches its
// neighbour's counter, then all start incrementing.
func startWorkload(t *testing.T, endpoints []string, n int) *workload {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &workload{t: t, stop: make(chan struct{}), ctx: ctx, cancel: cancel}
	run := fmt.Sprint(time.Now().UnixNano())
	for i := 0; i < n; i++ {
		s := &session{i: i, key: fmt.Sprintf("ctr/%s/%d", run, i), watchKey: fmt.Sprintf("ctr/%s/%d", run, (i+1)%n),
			watchOK: make(chan struct{})}
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		var err error
		s.conn, s.kv, err = dialSession(dctx, endpoints, func(ev client.Event) {
			if ev.Type == client.EventSessionLost {
				err := ev.Err
				s.lost.Store(&err)
			}
		})
		dcancel()
		if err != nil {
			w.close()
			t.Fatalf("session %d: dial: %v", i, err)
		}
		w.sessions = append(w.sessions, s)
	}
	// Watches first, so that every value of every counter is seen.
	for _, s := range w.sessions {
		// ctx also bounds the watch: it ends when the workload closes.
		wt, err := s.kv.Watch(ctx, s.watchKey)
		if err != nil {
			w.close()
			t.Fatalf("session %d: watch: %v", s.i, err)
		}
		w.watchers.Add(1)
		go func() {
			defer w.watchers.Done()
			for ev := range wt.Events() {
				v, err := strconv.ParseInt(string(ev.Value), 10, 64)
				s.mu.Lock()
				if err != nil || ev.Deleted {
					s.ended = fmt.Errorf("watch of %s: event %+v is not a counter value", s.watchKey, ev)
				} else {
					s.seen = append(s.seen, v)
					s.resync = append(s.resync, ev.Resync)
				}
				s.mu.Unlock()
			}
			s.mu.Lock()
			if s.ended == nil && ctx.Err() == nil {
				s.ended = fmt.Errorf("watch of %s ended early: %v", s.watchKey, wt.Err())
			}
			s.mu.Unlock()
		}()
	}
	for _, s := range w.sessions {
		w.writers.Add(1)
		go func() {
			defer w.writers.Done()
			for range maxIncrs {
				select {
				case <-w.stop:
					return
				case <-time.After(incrPause):
				}
				cctx, ccancel := context.WithTimeout(ctx, callBudget)
				v, err := s.kv.Incr(cctx, s.key, 1)
				ccancel()
				s.mu.Lock()
				if err != nil {
					s.errs = append(s.errs, err)
				} else {
					s.acked = append(s.acked, v)
				}
				s.mu.Unlock()
				if errors.Is(err, client.ErrSessionExpired) || errors.Is(err, client.ErrClosed) {
					return
				}
			}
		}()
	}
	t.Cleanup(w.close)
	return w
}

// acks counts acknowledged increments over all sessions.
func (w *workload) acks() int {
	n := 0
	for _, s := range w.sessions {
		s.mu.Lock()
		n += len(s.acked)
		s.mu.Unlock()
	}
	return n
}

// waitMore waits until n more increments are acknowledged: the cluster
// serves the sessions now.
func (w *workload) waitMore(n int) {
	w.t.Helper()
	want := w.acks() + n
	waitFor(w.t, 30*time.Second, fmt.Sprintf("%d more acknowledged writes", n), func() (bool, string) {
		return w.acks() >= want, fmt.Sprint(w.acks(), " acknowledged")
	})
}

// finish stops the writers and checks what the sessions saw: no session
// lost, no call failed, each counter's acknowledged values are 1, 2, 3, ...
// (nothing applied twice, nothing skipped), the counter's final value (a
// linearizable read) is its number of acknowledged increments (nothing
// lost), and the watch of each counter delivered its values in order up to
// the final one, each change once or, after a lost notification, a Resync
// to a newer value.
func (w *workload) finish() {
	t := w.t
	t.Helper()
	close(w.stop)
	w.writers.Wait()
	total := 0
	for _, s := range w.sessions {
		if p := s.lost.Load(); p != nil {
			t.Errorf("session %d lost: %v", s.i, *p)
		}
		if st := s.conn.State(); st != client.StateConnected && st != client.StateReconnecting {
			t.Errorf("session %d ends in state %v", s.i, st)
		}
		s.mu.Lock()
		acked, errs := slices.Clone(s.acked), slices.Clone(s.errs)
		s.mu.Unlock()
		total += len(acked)
		if len(errs) > 0 {
			t.Errorf("session %d: %d of %d increments failed; first: %v", s.i, len(errs), len(errs)+len(acked), errs[0])
		}
		for j, v := range acked {
			if v != int64(j+1) {
				t.Errorf("session %d: increment %d answered %d; want %d (applied twice or skipped)", s.i, j+1, v, j+1)
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), callBudget)
		kvv, err := s.kv.Get(ctx, s.key)
		cancel()
		if err != nil {
			t.Errorf("session %d: read %s: %v", s.i, s.key, err)
			continue
		}
		final, _ := strconv.ParseInt(string(kvv.Value), 10, 64)
		if final != int64(len(acked)) {
			t.Errorf("session %d: counter %s is %d after %d acknowledged increments (%d failed)", s.i, s.key, final, len(acked), len(errs))
		}
	}
	// Each watch reaches its counter's final value.
	for _, s := range w.sessions {
		owner := w.sessions[(s.i+1)%len(w.sessions)]
		owner.mu.Lock()
		final := int64(len(owner.acked))
		owner.mu.Unlock()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s.mu.Lock()
			seen, resync, ended := slices.Clone(s.seen), slices.Clone(s.resync), s.ended
			s.mu.Unlock()
			if ended != nil {
				t.Errorf("session %d: %v", s.i, ended)
				break
			}
			if len(seen) > 0 && seen[len(seen)-1] >= final || time.Now().After(deadline) {
				if len(seen) == 0 || seen[len(seen)-1] != final {
					t.Errorf("session %d: watch of %s saw %d values, last %v; want the final %d", s.i, s.watchKey, len(seen), lastOf(seen), final)
					break
				}
				// Every change in order, or a Resync to a newer
				// state; never back (docs/kv.md §6).
				for j := 1; j < len(seen); j++ {
					if seen[j] <= seen[j-1] || (!resync[j] && seen[j] != seen[j-1]+1) {
						t.Errorf("session %d: watch of %s went from %d to %d (resync %v): a change missed without a resync, or repeated", s.i, s.watchKey, seen[j-1], seen[j], resync[j])
						break
					}
				}
				if seen[0] > 1 {
					t.Errorf("session %d: watch of %s started at %d; it was set up before the first increment", s.i, s.watchKey, seen[0])
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("%d sessions: %d increments acknowledged, every one exactly once, every change watched", len(w.sessions), total)
	w.close()
}

func lastOf(s []int64) any {
	if len(s) == 0 {
		return "none"
	}
	return s[len(s)-1]
}

// close ends the watches and sessions and waits for their goroutines.
func (w *workload) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.writers.Wait()
	w.cancel()
	for _, s := range w.sessions {
		s.kv.Close()
		s.conn.Close()
	}
	w.watchers.Wait()
	w.sessions = nil
}
