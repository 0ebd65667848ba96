package kv_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
)

// cluster drives a kv.Store through an fsm.Machine, as a node would.
type cluster struct {
	t     testing.TB
	m     *fsm.Machine
	store *kv.Store
	now   fsm.ClusterTime
	next  map[fsm.SessionID]uint64
	obs   *notes
}

// notes records what the observer saw, decoded as notifications.
type notes struct {
	t   testing.TB
	got map[fsm.SessionID][]kv.Notification
}

func (n *notes) ServerRequestAdded(s fsm.SessionID, r fsm.ServerRequest) {
	n.t.Errorf("the store queued a server request for %v: %q", s, r.Payload)
}

// Notes implements fsm.NoteObserver: each note's payload for each of its
// sessions.
func (n *notes) Notes(list []fsm.Note) {
	for _, nt := range list {
		note, err := kv.DecodeNotification(nt.Payload)
		if err != nil {
			n.t.Errorf("bad notification: %v", err)
		}
		if nt.Topic != note.Key {
			n.t.Errorf("note topic %q for key %q", nt.Topic, note.Key)
		}
		for _, s := range nt.Sessions {
			n.got[s] = append(n.got[s], note)
		}
	}
}

func (n *notes) SessionRemoved(fsm.SessionID, fsm.RemoveReason) {}

func newCluster(t testing.TB, cfg kv.Config, fcfg fsm.Config) *cluster {
	t.Helper()
	store, err := kv.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	obs := &notes{t: t, got: map[fsm.SessionID][]kv.Notification{}}
	m, err := fsm.New(store, fcfg, obs)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, m: m, store: store, now: 1e12, next: map[fsm.SessionID]uint64{}, obs: obs}
}

func sid(n byte) fsm.SessionID {
	var id fsm.SessionID
	id[15] = n
	return id
}

func (c *cluster) apply(cmd fsm.Command) fsm.Outcome {
	c.t.Helper()
	r, err := c.m.Apply(fsm.EncodeCommand(nil, cmd))
	if err != nil {
		c.t.Fatal(err)
	}
	o, err := fsm.DecodeResult(r)
	if err != nil {
		c.t.Fatal(err)
	}
	return o
}

func (c *cluster) open(id fsm.SessionID) {
	c.t.Helper()
	c.now = c.now.Add(time.Millisecond)
	if o := c.apply(fsm.OpenSession{Time: c.now, ID: id, Nonce: uint64(id[15]), Timeout: time.Minute}); o.Status != fsm.StatusSessionOpened {
		c.t.Fatalf("open: %+v", o)
	}
}

// do submits payload as the session's next request and returns the result
// or the kv error rebuilt from the application error code, as a client would.
func (c *cluster) do(id fsm.SessionID, payload []byte) ([]byte, error) {
	c.t.Helper()
	c.next[id]++
	c.now = c.now.Add(time.Millisecond)
	o := c.apply(fsm.ClientRequest{Time: c.now, Session: id, RequestID: c.next[id], LowestPending: c.next[id], Payload: payload})
	switch o.Status {
	case fsm.StatusOK:
		return o.Payload, nil
	case fsm.StatusAppError:
		return nil, kv.ErrorFromCode(o.AppCode, o.Message)
	case fsm.StatusQuotaExceeded:
		return nil, o.Err()
	default:
		c.t.Fatalf("request: %v", o.Err())
		return nil, nil
	}
}

func (c *cluster) get(key string) ([]byte, uint64, error) {
	c.t.Helper()
	res, err := c.m.Query(kv.EncodeGet(key))
	if err != nil {
		var coded interface{ AppCode() uint32 }
		if !errors.As(err, &coded) {
			c.t.Fatalf("query error without code: %v", err)
		}
		return nil, 0, kv.ErrorFromCode(coded.AppCode(), err.Error())
	}
	return kv.DecodeGetResult(res)
}

func (c *cluster) stats() kv.Stats {
	c.t.Helper()
	res, err := c.m.Query(kv.EncodeStats())
	if err != nil {
		c.t.Fatal(err)
	}
	st, err := kv.DecodeStats(res)
	if err != nil {
		c.t.Fatal(err)
	}
	return st
}

func TestSetGetDelete(t *testing.T) {
	c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	a := sid(1)
	c.open(a)
	res, err := c.do(a, kv.EncodeSet("k", []byte("v1")))
	if err != nil {
		t.Fatal(err)
	}
	if rev, err := kv.DecodeRevision(res); err != nil || rev != 1 {
		t.Fatalf("revision %d %v", rev, err)
	}
	c.do(a, kv.EncodeSet("other", []byte("x")))
	c.do(a, kv.EncodeSet("k", []byte("v2")))
	v, rev, err := c.get("k")
	if err != nil || string(v) != "v2" || rev != 3 {
		t.Fatalf("get: %q rev %d %v", v, rev, err)
	}
	if _, err := c.do(a, kv.EncodeSet("empty", nil)); err != nil {
		t.Fatal(err)
	}
	if v, _, err := c.get("empty"); err != nil || len(v) != 0 {
		t.Fatalf("empty value: %q %v", v, err)
	}
	if _, err := c.do(a, kv.EncodeDelete("k")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.get("k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := c.do(a, kv.EncodeDelete("k")); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if st := c.stats(); st.Keys != 2 || st.Revision != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCompareAndSet(t *testing.T) {
	c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	a := sid(1)
	c.open(a)
	if _, err := c.do(a, kv.EncodeCompareAndSet("k", []byte("x"), []byte("y"))); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("cas on missing key: %v", err)
	}
	c.do(a, kv.EncodeSet("k", []byte("x")))
	if _, err := c.do(a, kv.EncodeCompareAndSet("k", []byte("z"), []byte("y"))); !errors.Is(err, kv.ErrMismatch) {
		t.Fatalf("cas mismatch: %v", err)
	}
	if v, _, _ := c.get("k"); string(v) != "x" {
		t.Fatalf("a failed cas changed the value to %q", v)
	}
	res, err := c.do(a, kv.EncodeCompareAndSet("k", []byte("x"), []byte("y")))
	if err != nil {
		t.Fatal(err)
	}
	if rev, _ := kv.DecodeRevision(res); rev != 2 {
		t.Fatalf("revision %d", rev)
	}
	if v, _, _ := c.get("k"); string(v) != "y" {
		t.Fatalf("value %q", v)
	}
}

func TestIncr(t *testing.T) {
	c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	a := sid(1)
	c.open(a)
	for i, tc := range []struct {
		delta int64
		want  int64
	}{{1, 1}, {1, 2}, {40, 42}, {-50, -8}} {
		res, err := c.do(a, kv.EncodeIncr("n", tc.delta))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := kv.DecodeIncrResult(res); err != nil || v != tc.want {
			t.Fatalf("step %d: %d %v, want %d", i, v, err, tc.want)
		}
	}
	if v, _, _ := c.get("n"); string(v) != "-8" {
		t.Fatalf("stored %q, want decimal -8", v)
	}
	c.do(a, kv.EncodeSet("s", []byte("abc")))
	if _, err := c.do(a, kv.EncodeIncr("s", 1)); !errors.Is(err, kv.ErrNotInteger) {
		t.Fatalf("incr of text: %v", err)
	}
	c.do(a, kv.EncodeSet("max", []byte("9223372036854775806")))
	if _, err := c.do(a, kv.EncodeIncr("max", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.do(a, kv.EncodeIncr("max", 1)); !errors.Is(err, kv.ErrOverflow) {
		t.Fatalf("overflow: %v", err)
	}
	c.do(a, kv.EncodeSet("min", []byte("-9223372036854775808")))
	if _, err := c.do(a, kv.EncodeIncr("min", -1)); !errors.Is(err, kv.ErrOverflow) {
		t.Fatalf("underflow: %v", err)
	}
}

func TestIncrIsExactlyOnceOnRetry(t *testing.T) {
	c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	a := sid(1)
	c.open(a)
	cmd := fsm.ClientRequest{Time: c.now + 1, Session: a, RequestID: 1, LowestPending: 1, Payload: kv.EncodeIncr("n", 1)}
	first := c.apply(cmd)
	cmd.Time += 10
	second := c.apply(cmd)
	if !bytes.Equal(first.Payload, second.Payload) {
		t.Fatal("retry returned a different result")
	}
	if v, _, _ := c.get("n"); string(v) != "1" {
		t.Fatalf("counter %q after a retried incr, want 1", v)
	}
}

func TestLimitsAndBadInput(t *testing.T) {
	cfg := kv.DefaultConfig()
	cfg.MaxKeyBytes = 4
	cfg.MaxValueBytes = 8
	cfg.MaxKeys = 2
	c := newCluster(t, cfg, fsm.DefaultConfig())
	a := sid(1)
	c.open(a)
	for _, tc := range []struct {
		name string
		cmd  []byte
		err  *kv.Error
	}{
		{"empty key", kv.EncodeSet("", []byte("v")), kv.ErrEmptyKey},
		{"long key", kv.EncodeSet("12345", []byte("v")), kv.ErrKeyTooLarge},
		{"long value", kv.EncodeSet("k", []byte("123456789")), kv.ErrValueTooLarge},
		{"long cas value", kv.EncodeCompareAndSet("k", nil, []byte("123456789")), kv.ErrValueTooLarge},
		{"long key watch", kv.EncodeWatch("12345"), kv.ErrKeyTooLarge},
		{"garbage", []byte{1, 2, 3}, kv.ErrMalformed},
		{"wrong version", append([]byte{9}, kv.EncodeSet("k", nil)[1:]...), kv.ErrMalformed},
		{"trailing bytes", append(kv.EncodeDelete("k"), 0), kv.ErrMalformed},
		{"query as command", kv.EncodeGet("k"), kv.ErrMalformed},
		{"unknown op", []byte{kv.Version, 60}, kv.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.do(a, tc.cmd)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if !strings.HasPrefix(err.Error(), "kv: ") {
				t.Fatalf("error text %q", err)
			}
		})
	}
	c.do(a, kv.EncodeSet("a", nil))
	c.do(a, kv.EncodeSet("b", nil))
	if _, err := c.do(a, kv.EncodeSet("c", nil)); !errors.Is(err, kv.ErrTooManyKeys) {
		t.Fatalf("third key: %v", err)
	}
	if _, err := c.do(a, kv.EncodeSet("a", []byte("upd"))); err != nil {
		t.Fatalf("updating an existing key at the key limit: %v", err)
	}
	if _, err := c.do(a, kv.EncodeIncr("c", 1)); !errors.Is(err, kv.ErrTooManyKeys) {
		t.Fatalf("incr creating a key: %v", err)
	}
	if _, err := c.m.Query(kv.EncodeSet("a", nil)); !errors.Is(err, kv.ErrMalformed) {
		t.Fatalf("command as query: %v", err)
	}
	if _, _, err := c.get(""); !errors.Is(err, kv.ErrEmptyKey) {
		t.Fatalf("get of empty key: %v", err)
	}
}

// watch runs a watch command for id and decodes its result.
func (c *cluster) watch(id fsm.SessionID, key string) kv.WatchResult {
	c.t.Helper()
	res, err := c.do(id, kv.EncodeWatch(key))
	if err != nil {
		c.t.Fatal(err)
	}
	r, err := kv.DecodeWatchResult(res)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// TestWatch: the watch result is the key's state; then each watcher is
// notified of every change of its keys, in order, each notification naming
// the key's previous revision (a deletion's revision carries over to the
// key's next value), and nothing is queued as server requests.
func TestWatch(t *testing.T) {
	c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	a, b, w := sid(1), sid(2), sid(3)
	c.open(a)
	c.open(b)
	c.open(w)
	c.do(w, kv.EncodeSet("k", []byte("v0")))
	// Watching a key with a value answers the current value.
	if r := c.watch(a, "k"); !r.Exists || string(r.Value) != "v0" || r.Revision != 1 {
		t.Fatalf("watch result %+v", r)
	}
	c.do(b, kv.EncodeWatch("k"))
	// Watching a key without a value answers its previous revision (0).
	if r := c.watch(b, "fresh"); r.Exists || r.Revision != 0 {
		t.Fatalf("watch result %+v", r)
	}
	c.do(b, kv.EncodeWatch("fresh")) // idempotent
	if st := c.stats(); st.Watches != 3 {
		t.Fatalf("watches %d", st.Watches)
	}
	c.do(w, kv.EncodeSet("k", []byte("v1")))
	c.do(w, kv.EncodeIncr("fresh", 5))
	c.do(w, kv.EncodeCompareAndSet("k", []byte("v1"), []byte("v2")))
	c.do(w, kv.EncodeDelete("k"))
	c.do(w, kv.EncodeSet("unwatched", []byte("x")))
	// A watch after the deletion names the deletion's revision.
	if r := c.watch(a, "k"); r.Exists || r.Revision != 5 {
		t.Fatalf("watch result after delete %+v", r)
	}
	c.do(w, kv.EncodeSet("k", []byte("v3")))

	want := map[fsm.SessionID][]kv.Notification{
		a: {{Key: "k", Value: []byte("v1"), Revision: 2, PrevRevision: 1},
			{Key: "k", Value: []byte("v2"), Revision: 4, PrevRevision: 2}, {Key: "k", Deleted: true, Revision: 5, PrevRevision: 4},
			{Key: "k", Value: []byte("v3"), Revision: 7, PrevRevision: 5}},
		b: {{Key: "k", Value: []byte("v1"), Revision: 2, PrevRevision: 1}, {Key: "fresh", Value: []byte("5"), Revision: 3},
			{Key: "k", Value: []byte("v2"), Revision: 4, PrevRevision: 2}, {Key: "k", Deleted: true, Revision: 5, PrevRevision: 4},
			{Key: "k", Value: []byte("v3"), Revision: 7, PrevRevision: 5}},
	}
	for id, notes := range want {
		got := c.obs.got[id]
		if len(got) != len(notes) {
			t.Fatalf("session %v got %d notifications, want %d: %+v", id, len(got), len(notes), got)
		}
		for i := range notes {
			g, n := got[i], notes[i]
			if g.Key != n.Key || !bytes.Equal(g.Value, n.Value) || g.Deleted != n.Deleted || g.Revision != n.Revision || g.PrevRevision != n.PrevRevision {
				t.Fatalf("session %v notification %d = %+v, want %+v", id, i, g, n)
			}
		}
	}
	if len(c.obs.got[w]) != 0 {
		t.Fatal("the writer got notifications it did not ask for")
	}
	if n := c.m.Stats().PendingServerRequests; n != 0 {
		t.Fatalf("%d server requests queued for watches", n)
	}

	c.do(a, kv.EncodeUnwatch("k"))
	c.do(a, kv.EncodeUnwatch("never")) // no-op
	c.do(w, kv.EncodeSet("k", []byte("v4")))
	if len(c.obs.got[a]) != 4 || len(c.obs.got[b]) != 6 {
		t.Fatalf("after unwatch: a %d b %d", len(c.obs.got[a]), len(c.obs.got[b]))
	}

	// Subscriptions vanish with their session.
	c.apply(fsm.CloseSession{Time: c.now + 1, Session: b})
	if st := c.stats(); st.Watches != 0 {
		t.Fatalf("watches %d after close", st.Watches)
	}
	c.do(w, kv.EncodeSet("k", []byte("v5")))
	if len(c.obs.got[b]) != 6 {
		t.Fatalf("closed session notified: %d", len(c.obs.got[b]))
	}
}

// TestWatchUsesNoServerRequestQueue: watches do not live in the sessions'
// server-request queues, so a watcher whose queue is full (here: limit 2)
// keeps its watch and is notified of every change; nothing is cancelled.
// With the old server-request path the third change cancelled the watch.
func TestWatchUsesNoServerRequestQueue(t *testing.T) {
	fcfg := fsm.DefaultConfig()
	fcfg.MaxPendingServerRequests = 2
	c := newCluster(t, kv.DefaultConfig(), fcfg)
	slow, w := sid(1), sid(2)
	c.open(slow)
	c.open(w)
	c.do(slow, kv.EncodeWatch("k"))
	for i := range 5 {
		if _, err := c.do(w, kv.EncodeSet("k", []byte{byte('0' + i)})); err != nil {
			t.Fatal(err)
		}
	}
	if st := c.stats(); st.Watches != 1 || st.CancelledWatches != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := c.obs.got[slow]; len(got) != 5 || string(got[4].Value) != "4" {
		t.Fatalf("notifications %+v", got)
	}
}

func TestWatchNeedsSession(t *testing.T) {
	c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	for _, cmd := range [][]byte{kv.EncodeWatch("k"), kv.EncodeUnwatch("k")} {
		o := c.apply(fsm.AppCommand{Time: 1, Payload: cmd})
		if err := kv.ErrorFromCode(o.AppCode, o.Message); o.Status != fsm.StatusAppError || !errors.Is(err, kv.ErrNoSession) {
			t.Fatalf("outcome %+v", o)
		}
	}
	// Other commands work without a session (node-local producers).
	if o := c.apply(fsm.AppCommand{Time: 2, Payload: kv.EncodeIncr("jobs", 1)}); o.Status != fsm.StatusOK {
		t.Fatalf("outcome %+v", o)
	}
}

func TestWatchLimits(t *testing.T) {
	cfg := kv.DefaultConfig()
	cfg.MaxWatchesPerSession = 2
	cfg.MaxWatchersPerKey = 1
	c := newCluster(t, cfg, fsm.DefaultConfig())
	a, b := sid(1), sid(2)
	c.open(a)
	c.open(b)
	c.do(a, kv.EncodeWatch("x"))
	c.do(a, kv.EncodeWatch("y"))
	if _, err := c.do(a, kv.EncodeWatch("z")); !errors.Is(err, kv.ErrTooManyWatches) {
		t.Fatalf("session limit: %v", err)
	}
	if _, err := c.do(b, kv.EncodeWatch("x")); !errors.Is(err, kv.ErrTooManyWatches) {
		t.Fatalf("key limit: %v", err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	a, b := sid(1), sid(2)
	c.open(a)
	c.open(b)
	c.do(a, kv.EncodeSet("k1", []byte("v")))
	c.do(a, kv.EncodeSet("k2", nil))
	c.do(a, kv.EncodeIncr("n", 7))
	c.do(a, kv.EncodeWatch("k1"))
	c.do(b, kv.EncodeWatch("k1"))
	c.do(b, kv.EncodeWatch("k3"))
	// A watched key deleted: its deletion revision must survive the
	// snapshot, as the previous revision of its next notification.
	c.do(a, kv.EncodeSet("k4", []byte("x")))
	c.do(b, kv.EncodeWatch("k4"))
	res, err := c.do(a, kv.EncodeDelete("k4"))
	if err != nil {
		t.Fatal(err)
	}
	delRev, err := kv.DecodeRevision(res)
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := c.m.SaveSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	r := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
	r.open(sid(9))
	r.do(sid(9), kv.EncodeSet("junk", nil))
	if err := r.m.RecoverFromSnapshot(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	h1, _ := c.m.Hash()
	h2, _ := r.m.Hash()
	if h1 != h2 {
		t.Fatal("hash differs after restore")
	}
	if c.stats() != r.stats() {
		t.Fatalf("stats %+v vs %+v", c.stats(), r.stats())
	}
	if _, _, err := r.get("junk"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatal("restore kept old keys")
	}
	// Watches work after restore, including removal with the session.
	r.now, r.next = c.now, c.next
	r.do(a, kv.EncodeSet("k1", []byte("after")))
	r.do(a, kv.EncodeSet("k4", []byte("back")))
	if got := r.obs.got[b]; len(got) != 2 || string(got[0].Value) != "after" || got[1].Key != "k4" || got[1].PrevRevision != delRev {
		t.Fatalf("notifications after restore %+v (k4's previous revision should be %d)", got, delRev)
	}
	r.apply(fsm.CloseSession{Time: r.now + 1, Session: b})
	if st := r.stats(); st.Watches != 1 {
		t.Fatalf("watches %d", st.Watches)
	}

	// Damage inside the application's part is refused.
	var bad bytes.Buffer
	s, _ := kv.New(kv.DefaultConfig())
	if err := s.RecoverFromSnapshot(bytes.NewReader([]byte{kv.Version, 1, 2})); err == nil {
		t.Fatal("truncated kv snapshot accepted")
	}
	if err := s.RecoverFromSnapshot(&bad); err == nil {
		t.Fatal("empty kv snapshot accepted")
	}
}

func TestErrorFromCode(t *testing.T) {
	for _, e := range []*kv.Error{kv.ErrNotFound, kv.ErrMismatch, kv.ErrEmptyKey, kv.ErrKeyTooLarge,
		kv.ErrValueTooLarge, kv.ErrNotInteger, kv.ErrOverflow, kv.ErrTooManyKeys, kv.ErrTooManyWatches,
		kv.ErrMalformed, kv.ErrNoSession, kv.ErrBusy} {
		err := kv.ErrorFromCode(e.AppCode(), e.Error()+": detail")
		if !errors.Is(err, e) || err.Error() != e.Error()+": detail" {
			t.Fatalf("code %d: %v", e.AppCode(), err)
		}
		if kv.ErrorFromCode(e.AppCode(), "") != e {
			t.Fatalf("code %d without message", e.AppCode())
		}
	}
	err := kv.ErrorFromCode(999, "what")
	for _, e := range []error{kv.ErrNotFound, kv.ErrMalformed} {
		if errors.Is(err, e) {
			t.Fatal("unknown code matched a sentinel")
		}
	}
}

func TestDecoders(t *testing.T) {
	if _, err := kv.DecodeRevision([]byte{1}); !errors.Is(err, kv.ErrMalformed) {
		t.Fatal(err)
	}
	if _, err := kv.DecodeIncrResult(nil); !errors.Is(err, kv.ErrMalformed) {
		t.Fatal(err)
	}
	if _, _, err := kv.DecodeGetResult([]byte{1, 2}); !errors.Is(err, kv.ErrMalformed) {
		t.Fatal(err)
	}
	if _, err := kv.DecodeStats(make([]byte, 31)); !errors.Is(err, kv.ErrMalformed) {
		t.Fatal(err)
	}
	for _, b := range [][]byte{nil, {3}, {1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9, 'k'},
		{2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'k', 0},
		// previous revision not below the revision
		{2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'k'}} {
		if _, err := kv.DecodeNotification(b); !errors.Is(err, kv.ErrMalformed) {
			t.Fatalf("notification %v: %v", b, err)
		}
	}
	for _, b := range [][]byte{nil, {0, 0, 0, 0, 0, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 1, 2}, {0, 0, 0, 0, 0, 0, 0, 1, 0, 0}} {
		if _, err := kv.DecodeWatchResult(b); !errors.Is(err, kv.ErrMalformed) {
			t.Fatalf("watch result %v: %v", b, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := kv.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := kv.DefaultConfig()
	bad.MaxKeys = 0
	if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), "kv: ") {
		t.Fatalf("error %v", err)
	}
	if _, err := kv.New(bad); err == nil {
		t.Fatal("bad config accepted")
	}
}

func FuzzStore(f *testing.F) {
	f.Add(kv.EncodeSet("k", []byte("v")))
	f.Add(kv.EncodeCompareAndSet("k", []byte("v"), []byte("w")))
	f.Add(kv.EncodeIncr("n", -3))
	f.Add(kv.EncodeWatch("k"))
	f.Add(kv.EncodeGet("k"))
	f.Fuzz(func(t *testing.T, cmd []byte) {
		c := newCluster(t, kv.DefaultConfig(), fsm.DefaultConfig())
		c.open(sid(1))
		// Any bytes give a result or a kv error, never a panic.
		if _, err := c.do(sid(1), cmd); err != nil {
			var e *kv.Error
			if !errors.As(err, &e) {
				t.Fatalf("error without a kv code: %v", err)
			}
		}
		if _, err := c.m.Query(cmd); err != nil {
			var e *kv.Error
			if !errors.As(err, &e) {
				t.Fatalf("query error without a kv code: %v", err)
			}
		}
	})
}

// Past the quota, writes that grow the store are refused with
// StatusQuotaExceeded (fsm.ErrQuotaExceeded), while gets, deletes, writes
// that shrink a value and watches keep working; a replica restored from a
// snapshot counts the same bytes and refuses the same write.
func TestQuota(t *testing.T) {
	fcfg := fsm.DefaultConfig()
	fcfg.QuotaBytes = 10 * (1000 + 2 + 64) // ten keys "k0".."k9" of 1,000 bytes
	c := newCluster(t, kv.DefaultConfig(), fcfg)
	a := sid(1)
	c.open(a)
	value := make([]byte, 1000)
	for i := range 10 {
		if _, err := c.do(a, kv.EncodeSet(fmt.Sprintf("k%d", i), value)); err != nil {
			t.Fatalf("set %d under the quota: %v", i, err)
		}
	}
	if got := c.store.StateBytes(); got != fcfg.QuotaBytes {
		t.Fatalf("StateBytes = %d, want %d", got, fcfg.QuotaBytes)
	}
	_, err := c.do(a, kv.EncodeSet("k10", []byte("x")))
	if !errors.Is(err, fsm.ErrQuotaExceeded) {
		t.Fatalf("set past the quota = %v, want fsm.ErrQuotaExceeded", err)
	}
	if _, err := c.do(a, kv.EncodeSet("k0", append(value, 1))); !errors.Is(err, fsm.ErrQuotaExceeded) {
		t.Fatalf("growing a value past the quota = %v, want fsm.ErrQuotaExceeded", err)
	}
	if _, err := c.do(a, kv.EncodeIncr("n", 1)); !errors.Is(err, fsm.ErrQuotaExceeded) {
		t.Fatalf("incr of a new key past the quota = %v, want fsm.ErrQuotaExceeded", err)
	}
	if _, _, err := c.get("k10"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("the refused key exists: %v", err)
	}
	if _, _, err := c.get("k3"); err != nil {
		t.Fatalf("get at the quota: %v", err)
	}
	if _, err := c.do(a, kv.EncodeWatch("k3")); err != nil {
		t.Fatalf("watch at the quota: %v", err)
	}
	if _, err := c.do(a, kv.EncodeSet("k1", value[:10])); err != nil {
		t.Fatalf("shrinking a value at the quota: %v", err)
	}
	if _, err := c.do(a, kv.EncodeDelete("k2")); err != nil {
		t.Fatalf("delete at the quota: %v", err)
	}
	if _, err := c.do(a, kv.EncodeSet("k10", []byte("x"))); err != nil {
		t.Fatalf("set after freeing space: %v", err)
	}
	var snap bytes.Buffer
	if err := c.m.SaveSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	r := newCluster(t, kv.DefaultConfig(), fcfg)
	if err := r.m.RecoverFromSnapshot(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if r.store.StateBytes() != c.store.StateBytes() {
		t.Fatalf("restored StateBytes %d, want %d", r.store.StateBytes(), c.store.StateBytes())
	}
}

// MaxCommandSize is the longest command the store accepts: a
// compare-and-set at the key and value limits.
func TestMaxCommandSize(t *testing.T) {
	cfg := kv.DefaultConfig()
	s, err := kv.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("k", cfg.MaxKeyBytes)
	v := make([]byte, cfg.MaxValueBytes)
	if n := len(kv.EncodeCompareAndSet(key, v, v)); n != s.MaxCommandSize() {
		t.Fatalf("largest compare-and-set is %d bytes, MaxCommandSize %d", n, s.MaxCommandSize())
	}
}
