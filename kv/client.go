package kv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/zraft/zraft/client"
)

// Errors of the typed client itself (the store's errors are the *Error
// sentinels in errors.go).
var (
	// ErrClientClosed: Client.Close was called; watches end with it.
	ErrClientClosed = errors.New("kv: client closed")
	// ErrNoWatcher: Watch on a Client made without a Watcher (see
	// NewClient and WithWatcher).
	ErrNoWatcher = errors.New("kv: client has no watcher")
	// ErrWatchOverflow: a watch's event buffer was full when a change
	// arrived, so the watch ended rather than skip a change (see
	// WithWatchBuffer).
	ErrWatchOverflow = errors.New("kv: watch event buffer full")
	// ErrResync: the watch missed changes and re-reading the key failed,
	// so the watch ended rather than go on from an unknown state; the
	// error also wraps the cause.
	ErrResync = errors.New("kv: watch resynchronisation failed")
	// ErrSessionLost: the Conn's session is over (or the Conn was closed),
	// so the cluster no longer sends changes; the error also wraps the
	// Conn's cause.
	ErrSessionLost = errors.New("kv: session lost")
	// ErrBadResult: the cluster answered with a result this client cannot
	// decode (a different application, or a newer version of kv).
	ErrBadResult = errors.New("kv: undecodable result")
)

// unwatchTimeout bounds the unwatch command sent when a watch ends.
const unwatchTimeout = 5 * time.Second

// KeyValue is a key's value and the store revision of its last change.
type KeyValue struct {
	Key      string
	Value    []byte
	Revision uint64
}

// Event is one change of a watched key (see Notification): a new value, or
// Deleted, at store revision Revision.
type Event = Notification

// Client is a typed client of the kv application over one *client.Conn, as
// etcd's clientv3 KV and Watcher are: Set, Get, Delete, CompareAndSet and
// Incr return typed results, and errors match the sentinels of this package
// with errors.Is (ErrNotFound, ErrMismatch, ...). Errors of the connection
// (client.ErrOutcomeUnknown, client.ErrSessionExpired, ...) are returned
// unchanged and keep their meaning: a command whose error matches
// client.ErrOutcomeUnknown may or may not have run.
//
// A Client is safe for concurrent use.
type Client struct {
	conn    *client.Conn
	w       *Watcher
	ownConn bool
	stale   bool

	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close
	// ctx is cancelled by Close; re-reads of watched keys run under it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Option configures a Client.
type Option func(*Client)

// WithWatcher lets Watch use w, which must be the Watcher whose
// HandleNotification and HandleEvent receive conn's notifications and
// events (see NewWatcher and Watcher.ConnOptions). Without it Watch returns
// ErrNoWatcher.
func WithWatcher(w *Watcher) Option { return func(c *Client) { c.w = w } }

// NewClient returns a Client using conn. Close does not close conn.
func NewClient(conn *client.Conn, opts ...Option) *Client {
	c := &Client{conn: conn, done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	for _, o := range opts {
		o(c)
	}
	return c
}

// Dial connects like client.Dial and returns a Client that owns the Conn
// (Close closes it) and can Watch. It adds the Watcher's
// client.WithNotificationHandler and client.WithEventHandler to opts, so
// opts must not set event delivery themselves (Dial then fails with
// client.ErrInvalidOption); to observe events, build a Watcher and the
// Conn yourself and call Watcher.HandleEvent from your handler.
func Dial(ctx context.Context, endpoints []string, opts ...client.Option) (*Client, error) {
	w := NewWatcher()
	opts = append(opts[:len(opts):len(opts)], w.ConnOptions()...)
	conn, err := client.Dial(ctx, endpoints, opts...)
	if err != nil {
		return nil, err
	}
	c := NewClient(conn, WithWatcher(w))
	c.ownConn = true
	return c, nil
}

// Conn returns the connection the client uses.
func (c *Client) Conn() *client.Conn { return c.conn }

// Close ends every watch with ErrClientClosed and waits for their
// goroutines (each sends its unwatch, bounded by 5 s, when the Conn is not
// the client's own); then, if the client was made by Dial, it closes the
// Conn (which ends the session and with it its watches on the cluster).
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	c.cancel()
	c.mu.Unlock()
	if c.w != nil {
		c.w.endClient(c, ErrClientClosed)
	}
	c.wg.Wait()
	if c.ownConn {
		return c.conn.Close()
	}
	return nil
}

// appErr turns an application error into the kv error it carries, which
// also still matches client.ErrApplication and *client.AppError.
func appErr(err error) error {
	var ae *client.AppError
	if !errors.As(err, &ae) {
		return err
	}
	return &clientAppError{kv: ErrorFromCode(ae.Code, ae.Message), app: ae}
}

type clientAppError struct {
	kv  error
	app *client.AppError
}

func (e *clientAppError) Error() string   { return e.kv.Error() }
func (e *clientAppError) Unwrap() []error { return []error{e.kv, e.app} }

func (c *Client) submit(ctx context.Context, cmd []byte) ([]byte, error) {
	res, err := c.conn.Submit(ctx, cmd)
	if errors.Is(err, client.ErrQuotaExceeded) {
		return nil, fmt.Errorf("%w: %w", ErrQuotaExceeded, err)
	}
	if err != nil {
		return nil, appErr(err)
	}
	return res, nil
}

func badResult(err error) error { return fmt.Errorf("%w: %w", ErrBadResult, err) }

func (c *Client) revision(ctx context.Context, cmd []byte) (uint64, error) {
	res, err := c.submit(ctx, cmd)
	if err != nil {
		return 0, err
	}
	rev, err := DecodeRevision(res)
	if err != nil {
		return 0, badResult(err)
	}
	return rev, nil
}

// Set stores value at key, exactly once, and returns the store's revision
// after the change.
func (c *Client) Set(ctx context.Context, key string, value []byte) (revision uint64, err error) {
	return c.revision(ctx, EncodeSet(key, value))
}

// Delete removes key and returns the store's revision after the change;
// ErrNotFound if key has no value.
func (c *Client) Delete(ctx context.Context, key string) (revision uint64, err error) {
	return c.revision(ctx, EncodeDelete(key))
}

// CompareAndSet stores value at key if its current value is expected and
// returns the revision after the change; ErrNotFound if key has no value,
// ErrMismatch if it has another one.
func (c *Client) CompareAndSet(ctx context.Context, key string, expected, value []byte) (revision uint64, err error) {
	return c.revision(ctx, EncodeCompareAndSet(key, expected, value))
}

// Incr adds delta to the decimal integer at key (a missing key counts as 0)
// and returns the new value; ErrNotInteger or ErrOverflow otherwise.
func (c *Client) Incr(ctx context.Context, key string, delta int64) (int64, error) {
	res, err := c.submit(ctx, EncodeIncr(key, delta))
	if err != nil {
		return 0, err
	}
	v, err := DecodeIncrResult(res)
	if err != nil {
		return 0, badResult(err)
	}
	return v, nil
}

// Get returns key's value and the revision of its last change; ErrNotFound
// if it has no value. The read is linearizable unless opts include
// client.AllowStale().
func (c *Client) Get(ctx context.Context, key string, opts ...client.QueryOption) (KeyValue, error) {
	res, err := c.conn.Query(ctx, EncodeGet(key), opts...)
	if err != nil {
		return KeyValue{}, appErr(err)
	}
	v, rev, err := DecodeGetResult(res)
	if err != nil {
		return KeyValue{}, badResult(err)
	}
	return KeyValue{Key: key, Value: v, Revision: rev}, nil
}

// Stats returns the store's counters.
func (c *Client) Stats(ctx context.Context, opts ...client.QueryOption) (Stats, error) {
	res, err := c.conn.Query(ctx, EncodeStats(), opts...)
	if err != nil {
		return Stats{}, appErr(err)
	}
	st, err := DecodeStats(res)
	if err != nil {
		return Stats{}, badResult(err)
	}
	return st, nil
}

// Watch subscribes to changes of key. The first event is the key's current
// value, if it has one (with Resync set: it is a state, not a change); then
// every change in the order the cluster applied them, each once, as long as
// no notification is lost. Notifications are leader-only and not
// acknowledged (docs/kv.md §6): when one is lost or skipped, the next event
// has Resync set and is the key's state at its Revision, no older than any
// change missed, and the events in between are not delivered. An event is
// never older than the one before it: revisions strictly increase.
//
// The watch detects a gap when a notification's previous revision is not
// the revision of the last event, and when the Conn reports lost
// notifications (the session continued on another connection or member, or
// the node or the Conn dropped some): it then re-reads the key by sending
// the watch command again (linearizable, and it names a deletion's
// revision, which a Get cannot) and delivers the result if it is newer.
//
// The watch ends, and Events is closed, when ctx ends (Err returns
// ctx.Err()), when Close is called (ErrClientClosed), when the session is
// lost or the Conn closed (ErrSessionLost), when the events buffer (see
// WithWatchBuffer) is full as an event arrives (ErrWatchOverflow), or when
// a needed re-read fails (ErrResync). When the last watch of a key on the
// session (all Clients sharing the Watcher) ends, the client unwatches the
// key on the cluster.
//
// Watch returns once the cluster has applied the subscription; its error
// matches the store's sentinels (ErrTooManyWatches, ...) or the
// connection's. Watch, unwatch and re-read commands of one Watcher are
// sent one at a time, so that an unwatch cannot overtake a newer watch of
// its key.
func (c *Client) Watch(ctx context.Context, key string) (*Watch, error) {
	if c.w == nil {
		return nil, ErrNoWatcher
	}
	if !c.track() {
		return nil, ErrClientClosed
	}
	started := false
	defer func() {
		if !started {
			c.wg.Done()
		}
	}()

	c.w.opMu.Lock()
	wt, first, err := c.w.add(c, key)
	if err != nil {
		c.w.opMu.Unlock()
		return nil, err
	}
	// Sent for every watch, also when the session already watches the
	// key (the store answers the current state again): the result is
	// the watch's starting point.
	var res []byte
	res, err = c.submit(ctx, EncodeWatch(key))
	if err == nil {
		err = c.w.start(wt, res)
	}
	c.w.opMu.Unlock()
	if err != nil {
		c.w.end(wt, err)
		// Unwatch only if the watch command may have run.
		c.release(wt, first && errors.Is(err, client.ErrOutcomeUnknown))
		return nil, err
	}
	started = true
	go c.follow(ctx, wt)
	return wt, nil
}

// track counts one more goroutine or call in c.wg, unless c is closed.
func (c *Client) track() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	return true
}

// follow waits for the end of a watch and unwatches its key when it was
// the key's last watch.
func (c *Client) follow(ctx context.Context, wt *Watch) {
	defer c.wg.Done()
	select {
	case <-ctx.Done():
		c.w.end(wt, ctx.Err())
	case <-c.done:
		// Also covers a watch registered after Close ended the others.
		c.w.end(wt, ErrClientClosed)
	case <-wt.ended:
	}
	c.release(wt, true)
}

// release forgets wt and, if unwatch is set, no other watch on the session
// follows its key and the session is still there, unwatches the key on the
// cluster.
func (c *Client) release(wt *Watch, unwatch bool) {
	c.w.opMu.Lock()
	defer c.w.opMu.Unlock()
	if !c.w.remove(wt) || !unwatch || errors.Is(wt.Err(), ErrSessionLost) {
		return
	}
	c.mu.Lock()
	closing := c.closed && c.ownConn
	c.mu.Unlock()
	if closing {
		// The session ends with the Conn, and its watches with it.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), unwatchTimeout)
	defer cancel()
	// Best effort: a failed unwatch leaves a subscription whose
	// notifications the Watcher drops; it ends with the session.
	_, _ = c.submit(ctx, EncodeUnwatch(wt.key))
}

// Watch is one subscription made by Client.Watch.
type Watch struct {
	key    string
	owner  *Client
	events chan Event
	ended  chan struct{} // closed with events
	// Guarded by the Watcher's mu.
	last uint64 // revision of the last event delivered (or the start point)
	err  error
	done bool
}

// Key returns the watched key.
func (w *Watch) Key() string { return w.key }

// Events returns the channel of changes; it is closed when the watch ends.
func (w *Watch) Events() <-chan Event { return w.events }

// Err returns why the watch ended, or nil while it runs.
func (w *Watch) Err() error {
	select {
	case <-w.ended:
		return w.err
	default:
		return nil
	}
}

// Watcher routes the kv notifications a Conn receives to the Watch calls of
// the Clients that use it. Give the Conn ConnOptions (or pass
// HandleNotification to client.WithNotificationHandler and call
// HandleEvent from your own event handler). It never blocks the Conn: an
// event that does not fit a watch's buffer ends that watch with
// ErrWatchOverflow, and re-reads run on a goroutine of a Client.
type Watcher struct {
	buffer int
	// opMu orders the watch, unwatch and re-read commands sent for this
	// Watcher's session, so that a key's unwatch (its last watch ended)
	// cannot overtake a new watch of the key.
	opMu sync.Mutex

	mu     sync.Mutex
	byKey  map[string][]*Watch
	lost   error // set once the session is over
	closed bool
	// resyncing is set while a re-read goroutine runs; again asks it
	// for one more round (notifications were lost again meanwhile).
	resyncing, again bool
	// resyncs counts re-read rounds, for tests and benchmarks.
	resyncs uint64
}

// WatcherOption configures a Watcher.
type WatcherOption func(*Watcher)

// WithWatchBuffer sets how many events may wait in one watch's channel.
// Default 256. Values below 1 are raised to 1.
func WithWatchBuffer(n int) WatcherOption {
	return func(w *Watcher) { w.buffer = max(n, 1) }
}

// NewWatcher returns a Watcher to hand to a Conn (see Watcher) and to
// NewClient with WithWatcher.
func NewWatcher(opts ...WatcherOption) *Watcher {
	w := &Watcher{buffer: 256, byKey: make(map[string][]*Watch)}
	for _, o := range opts {
		o(w)
	}
	return w
}

// ConnOptions returns the client options that hand a Conn's notifications
// and events to w: client.WithNotificationHandler(w.HandleNotification)
// and client.WithEventHandler(w.HandleEvent).
func (w *Watcher) ConnOptions() []client.Option {
	return []client.Option{client.WithNotificationHandler(w.HandleNotification), client.WithEventHandler(w.HandleEvent)}
}

// Resyncs returns how many re-read rounds the Watcher started after lost
// notifications.
func (w *Watcher) Resyncs() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.resyncs
}

// HandleNotification takes one notification of the Conn. A Lost one makes
// every watched key be re-read; a payload that is not a kv notification,
// or of a key no watch follows, is dropped.
func (w *Watcher) HandleNotification(n client.Notification) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n.Lost {
		w.resyncLocked()
	}
	if len(n.Payload) == 0 {
		return
	}
	note, err := DecodeNotification(n.Payload)
	if err != nil {
		return
	}
	for _, wt := range w.byKey[note.Key] {
		ev := note
		// A notification that does not follow the last event is a
		// state after a gap: it is newer than anything missed.
		ev.Resync = note.PrevRevision != wt.last
		w.deliverLocked(wt, ev)
	}
}

// HandleEvent takes one event of the Conn: when the session is lost or the
// Conn closed, every watch ends with ErrSessionLost.
func (w *Watcher) HandleEvent(ev client.Event) {
	switch ev.Type {
	case client.EventSessionLost, client.EventClosed:
	default:
		return
	}
	cause := ev.Err
	if cause == nil {
		cause = client.ErrClosed
	}
	err := fmt.Errorf("%w: %w", ErrSessionLost, cause)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lost = err
	for _, ws := range w.byKey {
		for _, wt := range ws {
			w.endLocked(wt, err)
		}
	}
}

// add registers a new watch of key for c and reports whether it is the
// first watch of key on this Watcher's session.
func (w *Watcher) add(c *Client, key string) (*Watch, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lost != nil {
		return nil, false, w.lost
	}
	first := len(w.byKey[key]) == 0
	wt := &Watch{key: key, owner: c, events: make(chan Event, w.buffer), ended: make(chan struct{})}
	w.byKey[key] = append(w.byKey[key], wt)
	return wt, first, nil
}

// start applies a watch command's result to a new watch: the current
// value as its first event, or, for a key without a value, the revision
// its next notification will name as the previous one.
func (w *Watcher) start(wt *Watch, result []byte) error {
	r, err := DecodeWatchResult(result)
	if err != nil {
		return badResult(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !r.Exists {
		// No value: no event, but the next notification names
		// r.Revision as its previous one.
		if r.Revision > wt.last && !wt.done {
			wt.last = r.Revision
		}
		return nil
	}
	w.applyLocked(wt, r)
	return nil
}

// applyLocked brings wt to the state r read, unless wt has seen that
// revision or a newer one.
func (w *Watcher) applyLocked(wt *Watch, r WatchResult) {
	if r.Revision <= wt.last {
		return
	}
	if !r.Exists {
		// No value, and a revision newer than wt's: a deletion wt did
		// not see.
		w.deliverLocked(wt, Event{Key: wt.key, Deleted: true, Revision: r.Revision, Resync: true})
		return
	}
	w.deliverLocked(wt, Event{Key: wt.key, Value: r.Value, Revision: r.Revision, Resync: true})
}

// resyncLocked starts (or asks the running goroutine for another round of)
// re-reading every watched key.
func (w *Watcher) resyncLocked() {
	if w.resyncing {
		w.again = true
		return
	}
	for _, ws := range w.byKey {
		for _, wt := range ws {
			if wt.done || !wt.owner.track() {
				continue
			}
			w.resyncing = true
			w.resyncs++
			go w.resync(wt.owner)
			return
		}
	}
}

// resync re-reads every watched key through c's Conn (the watch command
// again), one round per Lost notification that arrived meanwhile, and
// brings each watch of the key to the state read. A failed re-read ends
// the key's watches with ErrResync.
func (w *Watcher) resync(c *Client) {
	defer c.wg.Done()
	for {
		w.mu.Lock()
		w.again = false
		keys := make([]string, 0, len(w.byKey))
		for k := range w.byKey {
			keys = append(keys, k)
		}
		w.mu.Unlock()
		for _, k := range keys {
			w.resyncKey(c, k)
		}
		w.mu.Lock()
		if !w.again {
			w.resyncing = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

func (w *Watcher) resyncKey(c *Client, key string) {
	w.opMu.Lock()
	defer w.opMu.Unlock()
	w.mu.Lock()
	watched := len(w.byKey[key]) > 0 && w.lost == nil
	w.mu.Unlock()
	if !watched {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, unwatchTimeout)
	defer cancel()
	res, err := c.submit(ctx, EncodeWatch(key))
	var r WatchResult
	if err == nil {
		if r, err = DecodeWatchResult(res); err != nil {
			err = badResult(err)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, wt := range w.byKey[key] {
		if err != nil {
			w.endLocked(wt, fmt.Errorf("%w: %w", ErrResync, err))
			continue
		}
		w.applyLocked(wt, r)
	}
}

// remove forgets wt and reports whether it was the last watch of its key
// on this Watcher's session.
func (w *Watcher) remove(wt *Watch) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	ws := w.byKey[wt.key]
	out := ws[:0]
	for _, o := range ws {
		if o != wt {
			out = append(out, o)
		}
	}
	clear(ws[len(out):])
	if len(out) == 0 {
		delete(w.byKey, wt.key)
		return true
	}
	w.byKey[wt.key] = out
	return false
}

func (w *Watcher) end(wt *Watch, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.endLocked(wt, err)
}

// deliverLocked hands ev to wt unless wt has seen that revision or a newer
// one (events never go back). A full buffer ends the watch.
func (w *Watcher) deliverLocked(wt *Watch, ev Event) {
	if wt.done || ev.Revision <= wt.last {
		return
	}
	if ev.Value != nil {
		ev.Value = append([]byte(nil), ev.Value...)
	}
	select {
	case wt.events <- ev:
		wt.last = ev.Revision
	default:
		w.endLocked(wt, ErrWatchOverflow)
	}
}

func (w *Watcher) endLocked(wt *Watch, err error) {
	if wt.done {
		return
	}
	wt.done, wt.err = true, err
	close(wt.events)
	close(wt.ended)
}

// endClient ends every watch of c.
func (w *Watcher) endClient(c *Client, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ws := range w.byKey {
		for _, wt := range ws {
			if wt.owner == c {
				w.endLocked(wt, err)
			}
		}
	}
}
