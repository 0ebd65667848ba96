// Package kv is zraft's built-in application: a key-value store with
// set, get, delete, compare-and-set, incr and per-key watches. It implements
// fsm.Application and exercises the framework: exactly-once commands,
// read-only queries, and leader-only notifications (fsm.Context.Notify) for
// watches, whose subscriptions are replicated and vanish with their
// session.
//
// The encoding helpers (EncodeSet, DecodeGetResult, DecodeNotification,
// ErrorFromCode...) are what clients use; this package does not link
// dragonboat.
package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/zraft/zraft/fsm"
)

// Config holds the store's limits. Every replica must use the same Config.
type Config struct {
	// MaxKeyBytes bounds a key's length; longer gets ErrKeyTooLarge.
	// Default 1024.
	MaxKeyBytes int
	// MaxValueBytes bounds a value's length; longer gets ErrValueTooLarge.
	// Default 64 KiB. A notification carries key and value, so keep
	// MaxKeyBytes+MaxValueBytes+32 within fsm.Config.MaxServerRequestBytes.
	MaxValueBytes int
	// MaxKeys bounds the number of keys; creating one more gets
	// ErrTooManyKeys. Default 1,000,000.
	MaxKeys int
	// MaxWatchesPerSession bounds one session's watched keys; more gets
	// ErrTooManyWatches. Default 1024.
	MaxWatchesPerSession int
	// MaxWatchersPerKey bounds the sessions watching one key; more gets
	// ErrTooManyWatches. Default 4096.
	MaxWatchersPerKey int
}

// DefaultConfig returns the defaults documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		MaxKeyBytes:          1024,
		MaxValueBytes:        64 << 10,
		MaxKeys:              1_000_000,
		MaxWatchesPerSession: 1024,
		MaxWatchersPerKey:    4096,
	}
}

// Validate reports the first limit that is not positive.
func (c Config) Validate() error {
	for _, p := range []struct {
		name string
		v    int
	}{
		{"MaxKeyBytes", c.MaxKeyBytes},
		{"MaxValueBytes", c.MaxValueBytes},
		{"MaxKeys", c.MaxKeys},
		{"MaxWatchesPerSession", c.MaxWatchesPerSession},
		{"MaxWatchersPerKey", c.MaxWatchersPerKey},
	} {
		if p.v <= 0 {
			return fmt.Errorf("kv: config %s must be positive, got %d", p.name, p.v)
		}
	}
	return nil
}

// Store is the key-value application. Use it through an fsm.Machine, which
// serialises calls as fsm.Application documents.
type Store struct {
	cfg      Config
	data     map[string]*entry
	revision uint64
	// watchers lists each watched key's sessions in id order, so that
	// notifications are emitted in a deterministic order.
	watchers map[string][]fsm.SessionID
	// watching is the reverse index, used for limits and for dropping a
	// closed session's watches.
	watching map[fsm.SessionID]map[string]struct{}
	// gone holds, for a watched key without a value that was deleted while
	// watched, the revision of that deletion: the previous revision its
	// next notification carries. Entries live while the key has watchers,
	// so it is bounded by watchers.
	gone    map[string]uint64
	watches int
	// cancelled counts watches cancelled by the former server-request
	// watch path (a full queue); kept for Stats and old snapshots, it no
	// longer grows.
	cancelled uint64
	// bytes is the store's size as held against the quota: for each key,
	// its length, its value's length and entryOverhead. size publishes it
	// for StateBytes, which other goroutines call.
	bytes int64
	size  *atomic.Int64
}

// entryOverhead is what each key costs beyond its key and value bytes in
// the quota's accounting (the map slot, the entry, slice headers), so that
// many small keys cannot hold much more memory than the quota says.
const entryOverhead = 64

type entry struct {
	value    []byte
	revision uint64
}

var _ fsm.Application = (*Store)(nil)

// New returns an empty store.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, size: new(atomic.Int64)}
	s.reset()
	return s, nil
}

func (s *Store) reset() {
	s.data = make(map[string]*entry)
	s.revision = 0
	s.watchers = make(map[string][]fsm.SessionID)
	s.watching = make(map[fsm.SessionID]map[string]struct{})
	s.gone = make(map[string]uint64)
	s.watches = 0
	s.cancelled = 0
	s.bytes = 0
}

// StateBytes implements fsm.StateSizer: the store's size as held against
// the quota. Safe from any goroutine.
func (s *Store) StateBytes() int64 { return s.size.Load() }

// MaxCommandSize implements fsm.CommandSizer: the longest command the
// store can accept (a compare-and-set of a key of MaxKeyBytes with an
// expected value and a value of MaxValueBytes each), so that a node answers
// longer ones TooLarge before they reach the log. A compare-and-set whose
// expected value is longer than MaxValueBytes could never match anyway.
func (s *Store) MaxCommandSize() int {
	n := func(l int) int { return len(binary.AppendUvarint(nil, uint64(l))) + l }
	return 2 + n(s.cfg.MaxKeyBytes) + 2*n(s.cfg.MaxValueBytes)
}

// resize records a change of the store's size.
func (s *Store) resize(delta int64) {
	s.bytes += delta
	s.size.Store(s.bytes)
}

func (s *Store) checkKey(key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	if len(key) > s.cfg.MaxKeyBytes {
		return wrap(ErrKeyTooLarge, "%d bytes, limit %d", len(key), s.cfg.MaxKeyBytes)
	}
	return nil
}

func (s *Store) checkValue(v []byte) error {
	if len(v) > s.cfg.MaxValueBytes {
		return wrap(ErrValueTooLarge, "%d bytes, limit %d", len(v), s.cfg.MaxValueBytes)
	}
	return nil
}

func revisionResult(rev uint64) []byte { return binary.BigEndian.AppendUint64(nil, rev) }

// Apply implements fsm.Application.
func (s *Store) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	c, err := decodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	if c.op >= OpGet {
		return nil, wrap(ErrMalformed, "%v is a query, not a command", c.op)
	}
	if err := s.checkKey(c.key); err != nil {
		return nil, err
	}
	switch c.op {
	case OpSet:
		if err := s.checkValue(c.value); err != nil {
			return nil, err
		}
		if err := s.put(ctx, c.key, c.value); err != nil {
			return nil, err
		}
		return revisionResult(s.revision), nil
	case OpDelete:
		if _, ok := s.data[c.key]; !ok {
			return nil, wrap(ErrNotFound, "%q", c.key)
		}
		prev := s.data[c.key].revision
		s.resize(-int64(len(c.key) + len(s.data[c.key].value) + entryOverhead))
		delete(s.data, c.key)
		s.revision++
		if len(s.watchers[c.key]) > 0 {
			s.gone[c.key] = s.revision
		}
		s.notify(ctx, Notification{Key: c.key, Deleted: true, Revision: s.revision, PrevRevision: prev})
		return revisionResult(s.revision), nil
	case OpCompareAndSet:
		if err := s.checkValue(c.value); err != nil {
			return nil, err
		}
		e, ok := s.data[c.key]
		if !ok {
			return nil, wrap(ErrNotFound, "%q", c.key)
		}
		if !bytes.Equal(e.value, c.expected) {
			return nil, wrap(ErrMismatch, "%q", c.key)
		}
		if err := s.put(ctx, c.key, c.value); err != nil {
			return nil, err
		}
		return revisionResult(s.revision), nil
	case OpIncr:
		var cur int64
		if e, ok := s.data[c.key]; ok {
			cur, err = strconv.ParseInt(string(e.value), 10, 64)
			if err != nil {
				return nil, wrap(ErrNotInteger, "%q", c.key)
			}
		}
		if (c.delta > 0 && cur > math.MaxInt64-c.delta) || (c.delta < 0 && cur < math.MinInt64-c.delta) {
			return nil, wrap(ErrOverflow, "%d + %d", cur, c.delta)
		}
		cur += c.delta
		if err := s.put(ctx, c.key, strconv.AppendInt(nil, cur, 10)); err != nil {
			return nil, err
		}
		return encodeIncrResult(cur), nil
	case OpWatch:
		return s.watch(ctx, c.key)
	case OpUnwatch:
		if ctx.Session().IsZero() {
			return nil, ErrNoSession
		}
		s.unwatch(ctx.Session(), c.key)
		return nil, nil
	default:
		return nil, wrap(ErrMalformed, "unknown op %d", uint8(c.op))
	}
}

// put stores a copy of value and notifies the key's watchers.
func (s *Store) put(ctx *fsm.Context, key string, value []byte) error {
	e, ok := s.data[key]
	grow := int64(len(value))
	if ok {
		grow -= int64(len(e.value))
	} else {
		grow += int64(len(key) + entryOverhead)
	}
	if q := ctx.Quota(); q > 0 && grow > 0 && s.bytes+grow > q {
		return wrap(ErrQuotaExceeded, "%d bytes stored, %d more would pass the quota of %d", s.bytes, grow, q)
	}
	if !ok {
		if len(s.data) >= s.cfg.MaxKeys {
			return wrap(ErrTooManyKeys, "limit %d", s.cfg.MaxKeys)
		}
		e = &entry{}
		s.data[key] = e
	}
	s.resize(grow)
	prev := e.revision
	if !ok {
		prev = s.gone[key]
		delete(s.gone, key)
	}
	s.revision++
	e.value = bytes.Clone(value)
	if e.value == nil {
		e.value = []byte{}
	}
	e.revision = s.revision
	s.notify(ctx, Notification{Key: key, Value: e.value, Revision: s.revision, PrevRevision: prev})
	return nil
}

// notify sends a change to every session watching its key, in session id
// order, as one leader-only notification (fsm.Context.Notify): not
// replicated, not acknowledged. Each carries the key's previous revision,
// so a watcher sees a gap (a lost or coalesced notification) and
// re-synchronises (docs/kv.md §6). A payload over the machine's
// MaxServerRequestBytes is not sent (Config keeps key and value within
// it); the watchers see the gap at the key's next change.
func (s *Store) notify(ctx *fsm.Context, n Notification) {
	ws := s.watchers[n.Key]
	if len(ws) == 0 {
		return
	}
	_ = ctx.Notify(n.Key, ws, encodeNotification(n))
}

// prevRevision is the revision the next notification of key carries as its
// previous one: the key's revision, or for a key without a value the
// revision of its deletion if it was deleted while watched (else 0).
func (s *Store) prevRevision(key string) uint64 {
	if e, ok := s.data[key]; ok {
		return e.revision
	}
	return s.gone[key]
}

// watch subscribes the session to key and returns the watch result: the
// key's current value (if any) and the revision its next notification
// will carry as the previous one.
func (s *Store) watch(ctx *fsm.Context, key string) ([]byte, error) {
	id := ctx.Session()
	if id.IsZero() {
		return nil, ErrNoSession
	}
	keys := s.watching[id]
	if _, ok := keys[key]; ok {
		return s.watchResult(key), nil
	}
	if len(keys) >= s.cfg.MaxWatchesPerSession {
		return nil, wrap(ErrTooManyWatches, "session limit %d", s.cfg.MaxWatchesPerSession)
	}
	ws := s.watchers[key]
	if len(ws) >= s.cfg.MaxWatchersPerKey {
		return nil, wrap(ErrTooManyWatches, "key limit %d", s.cfg.MaxWatchersPerKey)
	}
	i, _ := slices.BinarySearchFunc(ws, id, fsm.SessionID.Compare)
	s.watchers[key] = slices.Insert(ws, i, id)
	if keys == nil {
		keys = make(map[string]struct{})
		s.watching[id] = keys
	}
	keys[key] = struct{}{}
	s.watches++
	return s.watchResult(key), nil
}

func (s *Store) watchResult(key string) []byte {
	e, ok := s.data[key]
	if !ok {
		return encodeWatchResult(WatchResult{Revision: s.prevRevision(key)})
	}
	return encodeWatchResult(WatchResult{Exists: true, Value: e.value, Revision: e.revision})
}

func (s *Store) unwatch(id fsm.SessionID, key string) {
	keys := s.watching[id]
	if _, ok := keys[key]; !ok {
		return
	}
	delete(keys, key)
	if len(keys) == 0 {
		delete(s.watching, id)
	}
	ws := s.watchers[key]
	if i, ok := slices.BinarySearchFunc(ws, id, fsm.SessionID.Compare); ok {
		ws = slices.Delete(ws, i, i+1)
	}
	if len(ws) == 0 {
		delete(s.watchers, key)
		delete(s.gone, key)
	} else {
		s.watchers[key] = ws
	}
	s.watches--
}

// Query implements fsm.Application: get and stats.
func (s *Store) Query(q []byte) ([]byte, error) {
	c, err := decodeCommand(q)
	if err != nil {
		return nil, err
	}
	switch c.op {
	case OpGet:
		if err := s.checkKey(c.key); err != nil {
			return nil, err
		}
		e, ok := s.data[c.key]
		if !ok {
			return nil, wrap(ErrNotFound, "%q", c.key)
		}
		return encodeGetResult(e.value, e.revision), nil
	case OpStats:
		return encodeStats(Stats{Keys: uint64(len(s.data)), Watches: uint64(s.watches), Revision: s.revision,
			CancelledWatches: s.cancelled}), nil
	default:
		return nil, wrap(ErrMalformed, "%v is a command, not a query", c.op)
	}
}

// SessionOpened implements fsm.Application; the store accepts every session.
func (s *Store) SessionOpened(*fsm.Context, fsm.SessionInfo) error { return nil }

// SessionClosed implements fsm.Application: the session's watches vanish.
// Dropped notifications need no action, their receiver is gone.
func (s *Store) SessionClosed(_ *fsm.Context, id fsm.SessionID, _ fsm.RemoveReason, _ []fsm.ServerRequest) {
	keys := s.watching[id]
	if len(keys) == 0 {
		return
	}
	// Deleting in map order is fine: the result does not depend on it.
	for key := range keys {
		s.unwatch(id, key)
	}
}

// Snapshot layout (version 2): version | revision (8) | cancelled (8) |
// key count | per key in byte order: key, revision (8), value |
// watched key count | per key in byte order: key, session count, ids,
// gone (8: the deletion revision kept for a watched key without a value,
// else 0). Version 1, written before watches were notifications, has no
// gone field; it is still read (gone = 0).
const snapshotVersion byte = 2

// SaveSnapshot implements fsm.Application.
func (s *Store) SaveSnapshot(w io.Writer) error {
	b := make([]byte, 0, 64<<10)
	flush := func(force bool) error {
		if len(b) >= 32<<10 || (force && len(b) > 0) {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
		return nil
	}
	b = append(b, snapshotVersion)
	b = binary.BigEndian.AppendUint64(b, s.revision)
	b = binary.BigEndian.AppendUint64(b, s.cancelled)
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		e := s.data[k]
		b = appendStr(b, k)
		b = binary.BigEndian.AppendUint64(b, e.revision)
		b = appendBlob(b, e.value)
		if err := flush(false); err != nil {
			return err
		}
	}
	keys = keys[:0]
	for k := range s.watchers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		ws := s.watchers[k]
		b = appendStr(b, k)
		b = binary.AppendUvarint(b, uint64(len(ws)))
		for _, id := range ws {
			b = append(b, id[:]...)
		}
		b = binary.BigEndian.AppendUint64(b, s.gone[k])
		if err := flush(false); err != nil {
			return err
		}
	}
	return flush(true)
}

// RecoverFromSnapshot implements fsm.Application.
func (s *Store) RecoverFromSnapshot(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("kv: read snapshot: %w", err)
	}
	d := decoder{b: data}
	version := d.u8()
	if d.err == nil && version != 1 && version != snapshotVersion {
		return fmt.Errorf("kv: snapshot version %d unknown", version)
	}
	fresh := &Store{cfg: s.cfg, size: s.size}
	fresh.reset()
	fresh.revision = d.u64()
	fresh.cancelled = d.u64()
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		k := string(d.blob())
		e := &entry{revision: d.u64()}
		e.value = bytes.Clone(d.blob())
		if e.value == nil {
			e.value = []byte{}
		}
		fresh.data[k] = e
		fresh.bytes += int64(len(k) + len(e.value) + entryOverhead)
	}
	n = d.count()
	for i := 0; i < n && d.err == nil; i++ {
		k := string(d.blob())
		m := d.count()
		if d.err != nil || m > len(d.b)/16 {
			d.fail("bad watcher count")
			break
		}
		ws := make([]fsm.SessionID, m)
		for j := range ws {
			copy(ws[j][:], d.b[:16])
			d.b = d.b[16:]
			keys := fresh.watching[ws[j]]
			if keys == nil {
				keys = make(map[string]struct{})
				fresh.watching[ws[j]] = keys
			}
			keys[k] = struct{}{}
			fresh.watches++
		}
		fresh.watchers[k] = ws
		if version >= 2 {
			if g := d.u64(); g != 0 && d.err == nil {
				fresh.gone[k] = g
			}
		}
	}
	if err := d.end(); err != nil {
		return fmt.Errorf("kv: restore snapshot: %w", err)
	}
	*s = *fresh
	s.size.Store(s.bytes)
	return nil
}

// count reads a uvarint element count bounded by the remaining input.
func (d *decoder) count() int {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || (k > 1 && d.b[k-1] == 0) || n > uint64(len(d.b)) {
		d.fail("bad count")
		return 0
	}
	d.b = d.b[k:]
	return int(n)
}
