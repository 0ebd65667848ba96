package fsm_test

import (
	"errors"
	"reflect"

	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

func TestBatchEncodingRoundTrips(t *testing.T) {
	b := fsm.Batch{Time: 42, Requests: []fsm.ClientRequest{
		{Time: 42, Session: sid(1), RequestID: 1, LowestPending: 1, Payload: []byte("a")},
		{Time: 42, Session: sid(2), RequestID: 300, LowestPending: 7, Payload: nil},
	}}
	enc := fsm.EncodeCommand(nil, b)
	got, err := fsm.DecodeCommand(enc)
	if err != nil {
		t.Fatal(err)
	}
	gb := got.(fsm.Batch)
	if gb.Time != 42 || len(gb.Requests) != 2 || gb.Requests[1].RequestID != 300 || gb.Requests[0].Session != sid(1) ||
		string(gb.Requests[0].Payload) != "a" || gb.Requests[1].Time != 42 {
		t.Fatalf("decoded %+v", gb)
	}
	for cut := 1; cut < len(enc); cut++ {
		if _, err := fsm.DecodeCommand(enc[:cut]); !errors.Is(err, fsm.ErrMalformed) {
			t.Fatalf("truncated at %d: %v", cut, err)
		}
	}
}

// A batch must change state and answer exactly as its requests would one by
// one: same results, same state hash, and retries answered from the cache.
func TestBatchAppliesLikeSeparateRequests(t *testing.T) {
	cfg := fsm.DefaultConfig()
	one, many := newHarness(t, cfg), newHarness(t, cfg)
	for _, h := range []*harness{one, many} {
		h.open(sid(1))
		h.open(sid(2))
	}
	reqs := []fsm.ClientRequest{
		{Session: sid(1), RequestID: 1, LowestPending: 1, Payload: []byte("x")},
		{Session: sid(2), RequestID: 1, LowestPending: 1, Payload: []byte("y")},
		{Session: sid(1), RequestID: 2, LowestPending: 1, Payload: []byte("z")},
		{Session: sid(1), RequestID: 1, LowestPending: 1, Payload: []byte("x")}, // a duplicate in the batch
		{Session: sid(9), RequestID: 1, LowestPending: 1, Payload: []byte("w")}, // unknown session
	}
	at := one.stamp(time.Millisecond)
	many.stamp(time.Millisecond)
	var want []fsm.Result
	for _, q := range reqs {
		q.Time = at
		want = append(want, one.raw(q))
	}
	res := many.raw(fsm.Batch{Time: at, Requests: reqs})
	if fsm.Status(res.Value) != fsm.StatusBatch {
		t.Fatalf("batch status %v", fsm.Status(res.Value))
	}
	got, err := fsm.DecodeBatchResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Value != want[i].Value || string(got[i].Data) != string(want[i].Data) {
			t.Errorf("request %d: batch %v %q, separately %v %q", i, fsm.Status(got[i].Value), got[i].Data,
				fsm.Status(want[i].Value), want[i].Data)
		}
	}
	// The machine counts log entries (Stats.Applied), which differ by
	// design; everything else must be identical.
	if !reflect.DeepEqual(one.m.Sessions(fsm.SessionID{}, 0), many.m.Sessions(fsm.SessionID{}, 0)) {
		t.Fatal("a batch left different sessions than its requests one by one")
	}
	so, sm := one.m.Stats(), many.m.Stats()
	so.Applied, sm.Applied = 0, 0
	if so != sm || one.app.digest != many.app.digest {
		t.Fatalf("a batch left a different state: %+v / %+v", sm, so)
	}
	if one.app.calls != many.app.calls {
		t.Fatalf("application saw %d commands in the batch, %d separately", many.app.calls, one.app.calls)
	}
	// A retry outside the batch is answered from the cache.
	if o := many.request(sid(1), 2, 1, "z"); o.Status != fsm.StatusOK || many.app.calls != one.app.calls || string(o.Payload) != string(want[2].Data) {
		t.Fatalf("retry after the batch: %+v (applied %d)", o, many.app.calls)
	}
}

func TestBatchLimits(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxBatch = 2
	h := newHarness(t, cfg)
	h.open(sid(1))
	if o := h.apply(fsm.Batch{Time: h.stamp(time.Millisecond)}); o.Status != fsm.StatusInvalid {
		t.Fatalf("empty batch: %+v", o)
	}
	q := fsm.ClientRequest{Session: sid(1), RequestID: 1, LowestPending: 1}
	before := h.app.calls
	if o := h.apply(fsm.Batch{Time: h.stamp(time.Millisecond), Requests: []fsm.ClientRequest{q, q, q}}); o.Status != fsm.StatusInvalid {
		t.Fatalf("batch over MaxBatch: %+v", o)
	}
	if h.app.calls != before {
		t.Fatal("a rejected batch ran requests")
	}
	if _, err := fsm.DecodeBatchResult(fsm.Result{Value: uint64(fsm.StatusBatch), Data: []byte{0, 5, 1}}); !errors.Is(err, fsm.ErrMalformed) {
		t.Fatalf("malformed batch result: %v", err)
	}
	if _, err := fsm.DecodeBatchResult(fsm.Result{Value: uint64(fsm.StatusOK)}); !errors.Is(err, fsm.ErrMalformed) {
		t.Fatalf("non-batch result: %v", err)
	}
}

func TestExpireSessionsAppliesLikeSeparateExpiries(t *testing.T) {
	cfg := fsm.DefaultConfig()
	one, many := newHarness(t, cfg), newHarness(t, cfg)
	for _, h := range []*harness{one, many} {
		h.open(sid(1))
		h.open(sid(2))
		h.open(sid(3))
		// Session 2 shows life later: its expiry below is stale.
		h.request(sid(2), 1, 1, "x")
	}
	stamp := func(h *harness, id byte) fsm.ClusterTime {
		info, err := h.m.Session(sid(id))
		if err != nil {
			t.Fatal(err)
		}
		return info.Liveness
	}
	exp := []fsm.Expiry{
		{Session: sid(1), LivenessStamp: stamp(one, 1)},
		{Session: sid(2), LivenessStamp: stamp(one, 2) - 1}, // older than the record: Stale
		{Session: sid(9), LivenessStamp: 0},                 // unknown
	}
	at := one.stamp(time.Minute)
	many.stamp(time.Minute)
	var want []fsm.Result
	for _, e := range exp {
		want = append(want, one.raw(fsm.ExpireSession{Time: at, Session: e.Session, LivenessStamp: e.LivenessStamp}))
	}
	enc := fsm.EncodeCommand(nil, fsm.ExpireSessions{Time: at, Expiries: exp})
	if dec, err := fsm.DecodeCommand(enc); err != nil || !reflect.DeepEqual(dec, fsm.ExpireSessions{Time: at, Expiries: exp}) {
		t.Fatalf("round trip: %+v, %v", dec, err)
	}
	got, err := fsm.DecodeBatchResult(many.raw(fsm.ExpireSessions{Time: at, Expiries: exp}))
	if err != nil || len(got) != len(want) {
		t.Fatalf("results %v, %v", got, err)
	}
	for i := range want {
		if got[i].Value != want[i].Value {
			t.Errorf("expiry %d: %v in the batch, %v separately", i, fsm.Status(got[i].Value), fsm.Status(want[i].Value))
		}
	}
	if fsm.Status(want[0].Value) != fsm.StatusOK || fsm.Status(want[1].Value) != fsm.StatusStale {
		t.Fatalf("scenario not exercised: %v %v", fsm.Status(want[0].Value), fsm.Status(want[1].Value))
	}
	if !reflect.DeepEqual(one.m.Sessions(fsm.SessionID{}, 0), many.m.Sessions(fsm.SessionID{}, 0)) {
		t.Fatal("an expiry batch left different sessions than its expiries one by one")
	}
	if o := many.apply(fsm.ExpireSessions{Time: at}); o.Status != fsm.StatusInvalid {
		t.Fatalf("empty expiry batch: %+v", o)
	}
}
