package kv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

const waitTimeout = 10 * time.Second

var (
	clusterOnce sync.Once
	shared      *node.Cluster
	sharedErr   error
)

// testCluster returns a real 3-node in-process kv cluster shared by the
// client tests of this package (each test uses its own keys); TestMain
// closes it.
func testCluster(t *testing.T) *node.Cluster {
	t.Helper()
	clusterOnce.Do(func() {
		cfg := node.DefaultConfig()
		cfg.InMemory = true
		cfg.KeepAliveInterval = 200 * time.Millisecond
		cfg.SessionTimeout = 3 * time.Second
		cfg.RedeliverInterval = 300 * time.Millisecond
		cfg.ShutdownGrace = 2 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shared, sharedErr = node.StartLocalCluster(ctx, 3, cfg, nil, func() fsm.Application {
			s, err := kv.New(kv.DefaultConfig())
			if err != nil {
				panic(err)
			}
			return s
		}, node.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func dialKV(t *testing.T, opts ...client.Option) *kv.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := kv.Dial(ctx, testCluster(t).Endpoints(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var keySeq atomic.Int64

// keyFor returns a key unique to this run of the test (the cluster is
// shared, also across -count repetitions).
func keyFor(t *testing.T, name string) string {
	return fmt.Sprintf("%s/%d/%s", t.Name(), keySeq.Add(1), name)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestClientTypedResultsAndErrors(t *testing.T) {
	kTypedA := keyFor(t, "a")
	kTypedMissing := keyFor(t, "missing")
	kTypedN := keyFor(t, "n")
	c := dialKV(t)
	ctx := ctxT(t)
	rev1, err := c.Set(ctx, kTypedA, []byte("one"))
	if err != nil || rev1 == 0 {
		t.Fatalf("Set = %d, %v", rev1, err)
	}
	got, err := c.Get(ctx, kTypedA)
	if err != nil || string(got.Value) != "one" || got.Revision != rev1 || got.Key != kTypedA {
		t.Fatalf("Get = %+v, %v; want one at %d", got, err, rev1)
	}
	if stale, err := c.Get(ctx, kTypedA, client.AllowStale()); err != nil || stale.Revision > rev1 {
		t.Fatalf("stale Get = %+v, %v", stale, err)
	}
	rev2, err := c.CompareAndSet(ctx, kTypedA, []byte("one"), []byte("two"))
	if err != nil || rev2 <= rev1 {
		t.Fatalf("CompareAndSet = %d, %v", rev2, err)
	}
	_, err = c.CompareAndSet(ctx, kTypedA, []byte("one"), []byte("three"))
	if !errors.Is(err, kv.ErrMismatch) || !errors.Is(err, client.ErrApplication) {
		t.Fatalf("CompareAndSet with a stale value: %v, want kv.ErrMismatch", err)
	}
	var app *client.AppError
	if !errors.As(err, &app) || app.Code != kv.ErrMismatch.AppCode() {
		t.Fatalf("error %v does not carry the application code", err)
	}
	if _, err := c.Get(ctx, kTypedMissing); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get missing: %v, want kv.ErrNotFound", err)
	}
	if _, err := c.Delete(ctx, kTypedMissing); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Delete missing: %v, want kv.ErrNotFound", err)
	}
	if _, err := c.CompareAndSet(ctx, kTypedMissing, nil, []byte("x")); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("CompareAndSet missing: %v, want kv.ErrNotFound", err)
	}
	if _, err := c.Incr(ctx, kTypedA, 1); !errors.Is(err, kv.ErrNotInteger) {
		t.Fatalf("Incr of text: %v, want kv.ErrNotInteger", err)
	}
	if _, err := c.Set(ctx, "", []byte("x")); !errors.Is(err, kv.ErrEmptyKey) {
		t.Fatalf("Set empty key: %v, want kv.ErrEmptyKey", err)
	}
	if v, err := c.Incr(ctx, kTypedN, -5); err != nil || v != -5 {
		t.Fatalf("Incr = %d, %v; want -5", v, err)
	}
	if v, err := c.Incr(ctx, kTypedN, 7); err != nil || v != 2 {
		t.Fatalf("Incr = %d, %v; want 2", v, err)
	}
	if got, err := c.Get(ctx, kTypedN); err != nil || string(got.Value) != "2" {
		t.Fatalf("Get counter = %+v, %v; want the decimal text 2", got, err)
	}
	rev3, err := c.Delete(ctx, kTypedA)
	if err != nil || rev3 <= rev2 {
		t.Fatalf("Delete = %d, %v", rev3, err)
	}
	if st, err := c.Stats(ctx); err != nil || st.Revision < rev3 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
}

func next(t *testing.T, w *kv.Watch) kv.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		return ev
	case <-time.After(waitTimeout):
		t.Fatal("no event")
	}
	return kv.Event{}
}

func ended(t *testing.T, w *kv.Watch) error {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				return w.Err()
			}
		case <-deadline:
			t.Fatal("watch did not end")
		}
	}
}

func TestClientWatchDeliversEveryChangeInOrder(t *testing.T) {
	kWatchK := keyFor(t, "k")
	watcher := dialKV(t)
	writer := dialKV(t)
	ctx := ctxT(t)
	rev0, err := writer.Set(ctx, kWatchK, []byte("v0"))
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	w, err := watcher.Watch(wctx, kWatchK)
	if err != nil {
		t.Fatal(err)
	}
	// The first event is the current value, a state (Resync).
	if ev := next(t, w); string(ev.Value) != "v0" || ev.Revision != rev0 || ev.Deleted || !ev.Resync {
		t.Fatalf("first event %+v, want v0 at %d", ev, rev0)
	}
	var revs []uint64
	for _, v := range []string{"v1", "v2", "v3"} {
		rev, err := writer.Set(ctx, kWatchK, []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	delRev, err := writer.Delete(ctx, kWatchK)
	if err != nil {
		t.Fatal(err)
	}
	// On a quiet key every change arrives, in order, each following the
	// one before (no Resync).
	prev := rev0
	for i, v := range []string{"v1", "v2", "v3"} {
		if ev := next(t, w); string(ev.Value) != v || ev.Revision != revs[i] || ev.PrevRevision != prev || ev.Resync {
			t.Fatalf("event %d = %+v, want %s at %d after %d", i, ev, v, revs[i], prev)
		}
		prev = revs[i]
	}
	if ev := next(t, w); !ev.Deleted || ev.Revision != delRev || ev.Key != kWatchK || ev.Resync {
		t.Fatalf("delete event %+v, want deleted at %d", ev, delRev)
	}

	// A second watch of the same key on the same client starts with the
	// current value too.
	rev4, err := writer.Set(ctx, kWatchK, []byte("v4"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); string(ev.Value) != "v4" || ev.PrevRevision != delRev || ev.Resync {
		t.Fatalf("event %+v, want v4 following the deletion at %d", ev, delRev)
	}
	w2, err := watcher.Watch(ctx, kWatchK)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w2); string(ev.Value) != "v4" || ev.Revision != rev4 {
		t.Fatalf("second watch's first event %+v, want v4 at %d", ev, rev4)
	}

	// Cancelling the first watch ends it; the second still gets changes.
	stop()
	if err := ended(t, w); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled watch ended with %v", err)
	}
	if _, err := writer.Set(ctx, kWatchK, []byte("v5")); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w2); string(ev.Value) != "v5" {
		t.Fatalf("second watch got %+v, want v5", ev)
	}
}

func TestClientWatchEndsOnOverflowAndUnwatches(t *testing.T) {
	kOverflowK := keyFor(t, "k")
	ctx := ctxT(t)
	writer := dialKV(t)
	wr := kv.NewWatcher(kv.WithWatchBuffer(1))
	conn, err := client.Dial(ctx, testCluster(t).Endpoints(),
		wr.ConnOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watcher := kv.NewClient(conn, kv.WithWatcher(wr))
	defer watcher.Close()

	stats := func() kv.Stats {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		st, err := writer.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// Earlier tests' sessions are closed but their closes may still be in
	// flight: wait until no watch is left on the (shared) cluster.
	waitWatches := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for stats().Watches != n {
			if time.Now().After(deadline) {
				t.Fatalf("watches on the cluster: %+v, want %d", stats(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitWatches(0)
	// A context of its own: waiting above may have used much of ctx.
	w, err := watcher.Watch(ctxT(t), kOverflowK)
	if err != nil {
		t.Fatal(err)
	}
	if got := stats().Watches; got != 1 {
		t.Fatalf("watches on the cluster %d, want 1", got)
	}
	// Nobody reads: the second change does not fit the buffer of one.
	for _, v := range []string{"a", "b", "c"} {
		if _, err := writer.Set(ctxT(t), kOverflowK, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	// Still nobody reads until the watch has ended: notifications arrive
	// after the writes are answered, and a read in between would make room.
	deadline := time.Now().Add(waitTimeout)
	for w.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("watch with a full buffer did not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.Err(); !errors.Is(err, kv.ErrWatchOverflow) {
		t.Fatalf("overflowed watch ended with %v", err)
	}
	// What was buffered before the overflow is still delivered.
	if ev, ok := <-w.Events(); !ok || string(ev.Value) != "a" {
		t.Fatalf("buffered event %+v (open %v), want a", ev, ok)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("events after the overflow")
	}
	// Its key is unwatched on the cluster.
	waitWatches(0)
}

func TestClientCloseEndsWatches(t *testing.T) {
	kCloseK := keyFor(t, "k")
	ctx := ctxT(t)
	c := dialKV(t)
	w, err := c.Watch(ctx, kCloseK)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, w); !errors.Is(err, kv.ErrClientClosed) {
		t.Fatalf("watch ended with %v, want ErrClientClosed", err)
	}
	if _, err := c.Watch(ctx, kCloseK); !errors.Is(err, kv.ErrClientClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
	if _, err := c.Set(ctx, kCloseK, nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Set after Close: %v, want client.ErrClosed", err)
	}
	if _, err := kv.NewClient(c.Conn()).Watch(ctx, "x"); !errors.Is(err, kv.ErrNoWatcher) {
		t.Fatalf("Watch without a watcher: %v", err)
	}
}

// Two Clients on one Conn share its session and its Watcher: the second
// watch of a key starts with the current value too, and the key stays
// watched on the cluster until the last watch ends.
func TestClientsSharingAWatcher(t *testing.T) {
	kSharedK := keyFor(t, "k")
	ctx := ctxT(t)
	writer := dialKV(t)
	wr := kv.NewWatcher()
	conn, err := client.Dial(ctx, testCluster(t).Endpoints(),
		wr.ConnOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	a, b := kv.NewClient(conn, kv.WithWatcher(wr)), kv.NewClient(conn, kv.WithWatcher(wr))
	rev, err := writer.Set(ctx, kSharedK, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	wa, err := a.Watch(ctx, kSharedK)
	if err != nil {
		t.Fatal(err)
	}
	wb, err := b.Watch(ctx, kSharedK)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*kv.Watch{wa, wb} {
		if ev := next(t, w); string(ev.Value) != "x" || ev.Revision != rev {
			t.Fatalf("first event %+v, want x at %d", ev, rev)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, wa); !errors.Is(err, kv.ErrClientClosed) {
		t.Fatalf("a's watch ended with %v", err)
	}
	if _, err := writer.Set(ctx, kSharedK, []byte("y")); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, wb); string(ev.Value) != "y" {
		t.Fatalf("b's watch got %+v after a closed, want y", ev)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// Endpoints may be typed with or without the tcp:// scheme (protocol.md §3).
func TestDialAcceptsEndpointsWithScheme(t *testing.T) {
	ctx := ctxT(t)
	var eps []string
	for _, ep := range testCluster(t).Endpoints() {
		eps = append(eps, "tcp://"+ep)
	}
	c, err := kv.Dial(ctx, eps)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Set(ctx, keyFor(t, "k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// collect reads w's events, the last one delivered being at revision from,
// until one at revision last or newer arrives and
// checks the promise of docs/kv.md §6: revisions strictly increase (never
// an older state after a newer one) and every event that is not a Resync
// follows the one before it.
func collect(t *testing.T, w *kv.Watch, from, last uint64) []kv.Event {
	t.Helper()
	var evs []kv.Event
	prev := from
	for prev < last {
		ev := next(t, w)
		if ev.Revision <= prev {
			t.Fatalf("event at revision %d after %d: %+v", ev.Revision, prev, evs)
		}
		if !ev.Resync && ev.PrevRevision != prev {
			t.Fatalf("event %+v follows %d without Resync", ev, prev)
		}
		prev = ev.Revision
		evs = append(evs, ev)
	}
	return evs
}

// A watcher whose notifications are dropped (here: the Conn's notification
// buffer of one overflows while the handler is held) is told so by a Lost
// marker, re-reads the key and ends at its latest value, with the events in
// between marked Resync and never going back.
func TestClientWatchResyncsAfterLostNotifications(t *testing.T) {
	key := keyFor(t, "k")
	ctx := ctxT(t)
	writer := dialKV(t)
	wr := kv.NewWatcher(kv.WithWatchBuffer(1024))
	gate := make(chan struct{})
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	conn, err := client.Dial(ctx, testCluster(t).Endpoints(),
		client.WithNotificationHandler(func(n client.Notification) {
			<-gate
			wr.HandleNotification(n)
		}),
		client.WithNotificationBuffer(1), client.WithEventHandler(wr.HandleEvent))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watcher := kv.NewClient(conn, kv.WithWatcher(wr))
	defer watcher.Close()
	defer release()
	w, err := watcher.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	values := map[uint64]string{}
	var last uint64
	for i := range 30 {
		v := fmt.Sprintf("v%d", i)
		rev, err := writer.Set(ctx, key, []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		values[rev], last = v, rev
	}
	// The notifications of the writes have been sent; give them time to
	// reach the held handler's buffer (one place), where most are dropped.
	time.Sleep(200 * time.Millisecond)
	release()
	evs := collect(t, w, 0, last)
	resynced := false
	for _, ev := range evs {
		if values[ev.Revision] != string(ev.Value) {
			t.Fatalf("event %+v: value of revision %d is %q", ev, ev.Revision, values[ev.Revision])
		}
		resynced = resynced || ev.Resync
	}
	if len(evs) >= 30 || !resynced {
		t.Fatalf("%d events for 30 changes with a buffer of one (resync seen: %v): %+v", len(evs), resynced, evs)
	}
	deadline := time.Now().Add(waitTimeout)
	for wr.Resyncs() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the Lost marker did not make the watcher re-read")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A watcher whose session moves to a new leader (leadership transferred)
// re-reads its keys on the new leader and goes on receiving changes there,
// never going back.
func TestClientWatchResyncsAcrossLeaderTransfer(t *testing.T) {
	c := testCluster(t)
	key := keyFor(t, "k")
	ctx := ctxT(t)
	writer := dialKV(t)
	wr := kv.NewWatcher()
	conn, err := client.Dial(ctx, c.Endpoints(), wr.ConnOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watcher := kv.NewClient(conn, kv.WithWatcher(wr))
	defer watcher.Close()
	w, err := watcher.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := writer.Set(ctx, key, []byte("before"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); string(ev.Value) != "before" || ev.Revision != rev || ev.Resync {
		t.Fatalf("event %+v, want before at %d", ev, rev)
	}
	old, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A transfer can be ignored (the target not caught up yet): ask again,
	// each time of another member, until leadership has moved.
	moved := false
	for attempt := 0; attempt < 10 && !moved; attempt++ {
		var others []uint64
		for _, n := range c.Nodes() {
			if n.ID() != old.ID() {
				others = append(others, n.ID())
			}
		}
		_ = old.TransferLeadership(others[attempt%len(others)])
		deadline := time.Now().Add(time.Second)
		for !moved && time.Now().Before(deadline) {
			l := c.Leader()
			moved = l != nil && l.ID() != old.ID()
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !moved {
		t.Fatalf("leadership did not move from %d", old.ID())
	}
	var last uint64
	for i := range 5 {
		if last, err = writer.Set(ctx, key, []byte(fmt.Sprintf("after-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	evs := collect(t, w, rev, last)
	if got := evs[len(evs)-1]; string(got.Value) != "after-4" {
		t.Fatalf("last event %+v, want after-4", got)
	}
	deadline := time.Now().Add(waitTimeout)
	for wr.Resyncs() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session's continuation on the new leader did not make the watcher re-read")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A watch of a key without a value starts with no event, even when the key
// was deleted while another session watched it; the key's next value then
// follows without Resync (its previous revision is that deletion's).
func TestClientWatchOfDeletedKeyStartsQuiet(t *testing.T) {
	key := keyFor(t, "k")
	ctx := ctxT(t)
	writer, first, second := dialKV(t), dialKV(t), dialKV(t)
	w1, err := first.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Set(ctx, key, []byte("a")); err != nil {
		t.Fatal(err)
	}
	delRev, err := writer.Delete(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	collect(t, w1, 0, delRev)
	w2, err := second.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := writer.Set(ctx, key, []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w2); string(ev.Value) != "b" || ev.Revision != rev || ev.PrevRevision != delRev || ev.Resync {
		t.Fatalf("first event %+v, want b at %d following the deletion at %d", ev, rev, delRev)
	}
}
