package fsm_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// step is one client request of session 1 and what the machine must answer.
type step struct {
	id, lowest uint64
	want       fsm.Status
	result     string // for StatusOK: the echo result ("" to skip)
}

func runSteps(t *testing.T, h *harness, steps []step) {
	t.Helper()
	for i, s := range steps {
		o := h.request(sid(1), s.id, s.lowest, fmt.Sprintf("echo:%d", s.id))
		if o.Status != s.want {
			t.Fatalf("step %d (id %d, lowest %d): status %v, want %v", i, s.id, s.lowest, o.Status, s.want)
		}
		if s.result != "" && string(o.Payload) != s.result {
			t.Fatalf("step %d (id %d): result %q, want %q", i, s.id, o.Payload, s.result)
		}
	}
}

// TestRequestOrder checks the ordering rule: a session's requests run in
// request-id order. The next id a session may run is the larger of its
// watermark and the highest cached id plus one; a higher id is OutOfOrder and
// runs nothing, a lower one is answered from the cache or ResponseEvicted.
// The echo results count application calls, so they show the run order.
func TestRequestOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"in order", []step{
			{1, 1, fsm.StatusOK, "1#1"}, {2, 1, fsm.StatusOK, "2#2"}, {3, 3, fsm.StatusOK, "3#3"},
		}},
		{"a later id waits for the earlier one", []step{
			{1, 1, fsm.StatusOK, "1#1"},
			{3, 2, fsm.StatusOutOfOrder, ""}, // 2 was lost on the way
			{4, 2, fsm.StatusOutOfOrder, ""},
			{2, 2, fsm.StatusOK, "2#2"},
			{3, 2, fsm.StatusOK, "3#3"},
			{4, 2, fsm.StatusOK, "4#4"},
			{3, 2, fsm.StatusOK, "3#3"}, // a retry is answered from the cache
		}},
		{"the first request is not id 1", []step{
			{2, 1, fsm.StatusOutOfOrder, ""},
			{1, 1, fsm.StatusOK, "1#1"},
			{2, 1, fsm.StatusOK, "2#2"},
		}},
		{"ids skipped by the client are covered by lowest pending", []step{
			{1, 1, fsm.StatusOK, "1#1"},
			// 2 and 3 were withdrawn before they were sent.
			{4, 4, fsm.StatusOK, "4#2"},
			{2, 4, fsm.StatusResponseEvicted, ""},
			{5, 4, fsm.StatusOK, "5#3"},
		}},
		{"an out-of-order request still raises the watermark", []step{
			{1, 1, fsm.StatusOK, "1#1"},
			{2, 1, fsm.StatusOK, "2#2"},
			{5, 3, fsm.StatusOutOfOrder, ""}, // 1 and 2 answered, 3 and 4 pending
			{1, 3, fsm.StatusResponseEvicted, ""},
			{3, 3, fsm.StatusOK, "3#3"},
			{5, 3, fsm.StatusOutOfOrder, ""},
			{4, 3, fsm.StatusOK, "4#4"},
			{5, 3, fsm.StatusOK, "5#5"},
		}},
		{"a lowest pending id above the request is clamped to it", []step{
			{1, 1, fsm.StatusOK, "1#1"},
			{2, 9, fsm.StatusOK, "2#2"},
			{3, 9, fsm.StatusOK, "3#3"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fsm.DefaultConfig())
			h.open(sid(1))
			runSteps(t, h, tc.steps)
		})
	}
}

// TestOutOfOrderChangesNothing checks that a refused request leaves the
// replicated state as it was, apart from the watermark its lowest pending id
// may raise and the liveness every request records.
func TestOutOfOrderChangesNothing(t *testing.T) {
	a, b := newHarness(t, fsm.DefaultConfig()), newHarness(t, fsm.DefaultConfig())
	for _, h := range []*harness{a, b} {
		h.open(sid(1))
		runSteps(t, h, []step{{1, 1, fsm.StatusOK, ""}})
	}
	runSteps(t, a, []step{{3, 1, fsm.StatusOutOfOrder, ""}, {7, 1, fsm.StatusOutOfOrder, ""}})
	// b records the same liveness, in as many entries, without the refused
	// requests.
	for range 2 {
		b.apply(fsm.RecordLiveness{Time: b.stamp(time.Millisecond), Sessions: []fsm.SessionID{sid(1)}})
	}
	if a.hash() != b.hash() {
		t.Fatal("an out-of-order request changed the state")
	}
	if a.app.calls != 1 {
		t.Fatalf("application ran %d times, want 1", a.app.calls)
	}
}

// TestRequestOrderAcrossSnapshot checks that the next runnable id survives a
// snapshot: it is derived from the watermark and the cached responses.
func TestRequestOrderAcrossSnapshot(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	runSteps(t, h, []step{{1, 1, fsm.StatusOK, ""}, {2, 1, fsm.StatusOK, ""}, {4, 2, fsm.StatusOutOfOrder, ""}})
	var buf bytes.Buffer
	if err := h.m.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	r := newHarness(t, fsm.DefaultConfig())
	if err := r.m.RecoverFromSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	r.now, r.app.calls = h.now, h.app.calls
	for _, x := range []*harness{h, r} {
		runSteps(t, x, []step{
			{4, 2, fsm.StatusOutOfOrder, ""},
			{1, 2, fsm.StatusResponseEvicted, ""},
			{2, 2, fsm.StatusOK, "2#2"},
			{3, 2, fsm.StatusOK, "3#3"},
			{4, 2, fsm.StatusOK, "4#4"},
		})
	}
	if h.hash() != r.hash() {
		t.Fatal("the restored machine diverged")
	}

	// Skipped ids: the watermark alone sets next after a restore.
	h = newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	runSteps(t, h, []step{{1, 1, fsm.StatusOK, ""}, {6, 5, fsm.StatusOutOfOrder, ""}})
	buf.Reset()
	if err := h.m.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	r = newHarness(t, fsm.DefaultConfig())
	if err := r.m.RecoverFromSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	r.now = h.now
	runSteps(t, r, []step{{6, 5, fsm.StatusOutOfOrder, ""}, {4, 5, fsm.StatusResponseEvicted, ""}, {5, 5, fsm.StatusOK, ""}, {6, 5, fsm.StatusOK, ""}})
}

// TestRequestOrderInBatch checks that the rule applies to each request of a
// Batch in turn, exactly as to separate entries.
func TestRequestOrderInBatch(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	h.open(sid(2))
	req := func(s byte, id, lowest uint64) fsm.ClientRequest {
		return fsm.ClientRequest{Session: sid(s), RequestID: id, LowestPending: lowest, Payload: []byte(fmt.Sprintf("echo:%d.%d", s, id))}
	}
	batch := func(reqs ...fsm.ClientRequest) []fsm.Outcome {
		t.Helper()
		res, err := fsm.DecodeBatchResult(h.raw(fsm.Batch{Time: h.stamp(time.Millisecond), Requests: reqs}))
		if err != nil || len(res) != len(reqs) {
			t.Fatalf("batch result %v (%d results)", err, len(res))
		}
		out := make([]fsm.Outcome, len(res))
		for i, r := range res {
			if out[i], err = fsm.DecodeResult(r); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	want := func(got []fsm.Outcome, want ...fsm.Status) {
		t.Helper()
		for i := range want {
			if got[i].Status != want[i] {
				t.Fatalf("request %d: %v, want %v", i, got[i].Status, want[i])
			}
		}
	}
	want(batch(req(1, 2, 1), req(1, 1, 1), req(2, 1, 1), req(1, 3, 1), req(1, 2, 1)),
		fsm.StatusOutOfOrder, fsm.StatusOK, fsm.StatusOK, fsm.StatusOutOfOrder, fsm.StatusOK)
	out := batch(req(1, 3, 1), req(1, 4, 1), req(2, 3, 1), req(2, 2, 1))
	want(out, fsm.StatusOK, fsm.StatusOK, fsm.StatusOutOfOrder, fsm.StatusOK)
	if string(out[0].Payload) != "1.3#4" || string(out[1].Payload) != "1.4#5" {
		t.Fatalf("run order: %q, %q", out[0].Payload, out[1].Payload)
	}
}

// TestLowestPendingIsNeverStarved reproduces issue 8's starvation: the first
// attempt of a session's oldest request is lost while the later ones are
// answered. Before the ordering rule they filled the response cache and the
// oldest one's retries (and every new request) got TooManyInFlight; now the
// later ones wait (OutOfOrder) and the oldest one runs.
func TestLowestPendingIsNeverStarved(t *testing.T) {
	cfg := fsm.DefaultConfig()
	h := newHarness(t, cfg)
	h.open(sid(1))
	n := uint64(cfg.MaxCachedResponses) + 1
	for id := uint64(2); id <= n; id++ {
		h.request(sid(1), id, 1, "echo:x") // id 1's first attempt was lost
	}
	if o := h.request(sid(1), 1, 1, "echo:1"); o.Status != fsm.StatusOK {
		t.Fatalf("the lowest pending request got %v", o.Status)
	}
	for id := uint64(2); id <= n+1; id++ {
		if o := h.request(sid(1), id, id, "echo:x"); o.Status != fsm.StatusOK {
			t.Fatalf("request %d after the lowest ran: %v", id, o.Status)
		}
	}
}
