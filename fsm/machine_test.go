package fsm_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

func TestDuplicateRequestRunsOnceAndReturnsIdenticalBytes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload string
		status  fsm.Status
	}{
		{"success", "echo:a", fsm.StatusOK},
		{"application error", "fail:7", fsm.StatusAppError},
		{"plain error", "plain", fsm.StatusAppError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fsm.DefaultConfig())
			h.open(sid(1))
			first := h.raw(fsm.ClientRequest{Time: h.stamp(time.Millisecond), Session: sid(1), RequestID: 1, LowestPending: 1, Payload: []byte(tc.payload)})
			second := h.raw(fsm.ClientRequest{Time: h.stamp(time.Millisecond), Session: sid(1), RequestID: 1, LowestPending: 1, Payload: []byte(tc.payload)})
			if h.app.calls != 1 {
				t.Fatalf("application ran %d times, want 1", h.app.calls)
			}
			if first.Value != second.Value || !bytes.Equal(first.Data, second.Data) {
				t.Fatalf("retry returned %+v, first was %+v", second, first)
			}
			if fsm.Status(first.Value) != tc.status {
				t.Fatalf("status %v, want %v", fsm.Status(first.Value), tc.status)
			}
		})
	}
}

func TestApplicationErrorCodes(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	o := h.request(sid(1), 1, 1, "fail:7")
	var ae *fsm.AppError
	if !errors.As(o.Err(), &ae) || ae.Code != 7 || ae.Message != "boom 7" {
		t.Fatalf("outcome %+v err %v", o, o.Err())
	}
	if !errors.Is(o.Err(), fsm.ErrApplication) {
		t.Fatal("application error does not match ErrApplication")
	}
	o = h.request(sid(1), 2, 1, "plain")
	if o.AppCode != 0 || o.Message != "plain failure" {
		t.Fatalf("plain error outcome %+v", o)
	}
}

func TestWatermarkEvictsBelowLowestPending(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	want := map[uint64]fsm.Outcome{}
	for id := uint64(1); id <= 3; id++ {
		want[id] = h.request(sid(1), id, 1, "echo:x")
	}
	want[4] = h.request(sid(1), 4, 2, "echo:x")
	calls := h.app.calls
	if calls != 4 {
		t.Fatalf("application ran %d times, want 4", calls)
	}

	if o := h.request(sid(1), 1, 2, "echo:x"); o.Status != fsm.StatusResponseEvicted {
		t.Fatalf("retry of evicted request 1: %v", o.Status)
	}
	for id := uint64(2); id <= 4; id++ {
		o := h.request(sid(1), id, 2, "echo:x")
		if o.Status != fsm.StatusOK || !bytes.Equal(o.Payload, want[id].Payload) {
			t.Fatalf("retry of %d: %+v, want %+v", id, o, want[id])
		}
	}
	if h.app.calls != calls {
		t.Fatalf("retries ran the application: %d calls, want %d", h.app.calls, calls)
	}
	info, err := h.m.Session(sid(1))
	if err != nil {
		t.Fatal(err)
	}
	if info.Watermark != 2 || info.CachedResponses != 3 {
		t.Fatalf("watermark %d cached %d, want 2 and 3", info.Watermark, info.CachedResponses)
	}
	if !errors.Is(fsm.Outcome{Status: fsm.StatusResponseEvicted}.Err(), fsm.ErrResponseEvicted) {
		t.Fatal("evicted outcome does not map to ErrResponseEvicted")
	}
}

func TestRequestBelowWatermarkNeverExecuted(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	h.request(sid(1), 10, 10, "echo:x")
	// Request 5 was never seen, but the client declared everything below 10
	// settled, so running it now could execute a command twice.
	if o := h.request(sid(1), 5, 5, "echo:y"); o.Status != fsm.StatusResponseEvicted {
		t.Fatalf("status %v, want ResponseEvicted", o.Status)
	}
	if h.app.calls != 1 {
		t.Fatalf("calls %d, want 1", h.app.calls)
	}
}

func TestLowestPendingAboveRequestIsClamped(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	first := h.request(sid(1), 3, 9, "echo:x")
	if first.Status != fsm.StatusOK {
		t.Fatal(first.Status)
	}
	again := h.request(sid(1), 3, 9, "echo:x")
	if again.Status != fsm.StatusOK || !bytes.Equal(again.Payload, first.Payload) || h.app.calls != 1 {
		t.Fatalf("retry %+v calls %d", again, h.app.calls)
	}
}

func TestRequestForMissingSession(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prep   func(h *harness)
		status fsm.Status
		err    error
	}{
		{"unknown", func(*harness) {}, fsm.StatusSessionNotFound, fsm.ErrSessionNotFound},
		{"closed", func(h *harness) {
			h.open(sid(1))
			h.apply(fsm.CloseSession{Time: h.stamp(0), Session: sid(1)})
		}, fsm.StatusSessionClosed, fsm.ErrSessionClosed},
		{"expired", func(h *harness) {
			h.open(sid(1))
			info, _ := h.m.Session(sid(1))
			h.apply(fsm.ExpireSession{Time: h.stamp(time.Minute), Session: sid(1), LivenessStamp: info.Liveness})
		}, fsm.StatusSessionExpired, fsm.ErrSessionExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fsm.DefaultConfig())
			tc.prep(h)
			o := h.request(sid(1), 1, 1, "echo:x")
			if o.Status != tc.status || !errors.Is(o.Err(), tc.err) {
				t.Fatalf("status %v err %v, want %v", o.Status, o.Err(), tc.status)
			}
			if h.app.calls != 0 || h.m.Stats().CachedResponses != 0 {
				t.Fatalf("calls %d cached %d, want nothing", h.app.calls, h.m.Stats().CachedResponses)
			}
			if _, err := h.m.Session(sid(1)); !errors.Is(err, tc.err) {
				t.Fatalf("Session query error %v, want %v", err, tc.err)
			}
		})
	}
}

func TestTooManyInFlight(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxCachedResponses = 2
	h := newHarness(t, cfg)
	h.open(sid(1))
	h.request(sid(1), 1, 1, "echo:a")
	h.request(sid(1), 2, 1, "echo:b")
	o := h.request(sid(1), 3, 1, "echo:c")
	if o.Status != fsm.StatusTooManyInFlight || !errors.Is(o.Err(), fsm.ErrTooManyInFlight) {
		t.Fatalf("status %v", o.Status)
	}
	if h.app.calls != 2 {
		t.Fatalf("calls %d, want 2", h.app.calls)
	}
	// Raising the watermark frees room; the same id then runs.
	if o := h.request(sid(1), 3, 2, "echo:c"); o.Status != fsm.StatusOK {
		t.Fatalf("status after watermark raise %v", o.Status)
	}
	if h.app.calls != 3 {
		t.Fatalf("calls %d, want 3", h.app.calls)
	}
}

func TestRequestValidation(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxPayloadBytes = 8
	cfg.MaxResultBytes = 16
	h := newHarness(t, cfg)
	h.open(sid(1))
	if o := h.request(sid(1), 0, 0, "echo:x"); o.Status != fsm.StatusInvalid {
		t.Fatalf("request id 0: %v", o.Status)
	}
	if o := h.request(sid(1), 1, 1, "echo:123456789"); o.Status != fsm.StatusInvalid || !errors.Is(o.Err(), fsm.ErrInvalid) {
		t.Fatalf("oversized payload: %v", o.Status)
	}
	if h.app.calls != 0 {
		t.Fatalf("invalid requests ran the application %d times", h.app.calls)
	}
	o := h.request(sid(1), 1, 1, "big:17")
	if o.Status != fsm.StatusResultTooLarge || h.app.calls != 1 {
		t.Fatalf("large result: %v calls %d", o.Status, h.app.calls)
	}
	if again := h.request(sid(1), 1, 1, "big:17"); again.Status != fsm.StatusResultTooLarge || h.app.calls != 1 {
		t.Fatalf("retry of large result: %v calls %d", again.Status, h.app.calls)
	}
}

func TestOpenSessionRetryReturnsSameSession(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	open := func(id fsm.SessionID, nonce uint64, hash byte) fsm.Outcome {
		return h.apply(fsm.OpenSession{Time: h.stamp(time.Millisecond), ID: id, SecretHash: hashOf(hash),
			Nonce: nonce, Timeout: 5 * time.Second})
	}
	first := open(sid(1), 42, 9)
	if first.Status != fsm.StatusSessionOpened || first.Session != sid(1) {
		t.Fatalf("first open %+v", first)
	}
	// A retry after a leader change carries a freshly generated id.
	retry := open(sid(2), 42, 9)
	if retry.Status != fsm.StatusSessionExisting || retry.Session != sid(1) {
		t.Fatalf("retry %+v, want existing session %v", retry, sid(1))
	}
	if n := h.m.Stats().Sessions; n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	// Another nonce, or another secret, is another session.
	if o := open(sid(3), 43, 9); o.Status != fsm.StatusSessionOpened {
		t.Fatalf("other nonce %+v", o)
	}
	if o := open(sid(4), 42, 8); o.Status != fsm.StatusSessionOpened {
		t.Fatalf("other secret %+v", o)
	}
	// An id collision is refused rather than merged.
	if o := open(sid(1), 44, 9); o.Status != fsm.StatusSessionExists {
		t.Fatalf("collision %+v", o)
	}
	if h.app.opened != 3 {
		t.Fatalf("application saw %d opens, want 3", h.app.opened)
	}
}

func TestOpenSessionRules(t *testing.T) {
	caps := func(kv ...string) []fsm.Capability {
		var cs []fsm.Capability
		for i := 0; i < len(kv); i += 2 {
			cs = append(cs, fsm.Capability{Name: kv[i], Value: kv[i+1]})
		}
		return cs
	}
	for _, tc := range []struct {
		name    string
		caps    []fsm.Capability
		timeout time.Duration
		status  fsm.Status
	}{
		{"ok", caps("a", "1", "b", "2"), 5 * time.Second, fsm.StatusSessionOpened},
		{"unsorted", caps("b", "1", "a", "2"), 5 * time.Second, fsm.StatusInvalid},
		{"duplicate", caps("a", "1", "a", "2"), 5 * time.Second, fsm.StatusInvalid},
		{"empty name", caps("", "1"), 5 * time.Second, fsm.StatusInvalid},
		{"too many", caps("a", "", "b", "", "c", "", "d", ""), 5 * time.Second, fsm.StatusInvalid},
		{"long value", caps("a", strings.Repeat("v", 17)), 5 * time.Second, fsm.StatusInvalid},
		{"short timeout", nil, time.Millisecond, fsm.StatusInvalid},
		{"long timeout", nil, 48 * time.Hour, fsm.StatusInvalid},
		{"rejected", caps("reject", "yes"), 5 * time.Second, fsm.StatusSessionRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fsm.DefaultConfig()
			cfg.MaxCapabilities = 3
			cfg.MaxCapabilityBytes = 16
			h := newHarness(t, cfg)
			o := h.apply(fsm.OpenSession{Time: h.stamp(0), ID: sid(1), Nonce: 1, Capabilities: tc.caps, Timeout: tc.timeout})
			if o.Status != tc.status {
				t.Fatalf("status %v (%s), want %v", o.Status, o.Message, tc.status)
			}
			live := o.Status == fsm.StatusSessionOpened
			if _, err := h.m.Session(sid(1)); (err == nil) != live {
				t.Fatalf("session live=%v after %v", err == nil, o.Status)
			}
			if tc.status == fsm.StatusSessionRejected {
				if o.Message != "not welcome here" || !errors.Is(o.Err(), fsm.ErrSessionRejected) {
					t.Fatalf("rejection %+v", o)
				}
			}
		})
	}
}

func TestTooManySessions(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxSessions = 2
	h := newHarness(t, cfg)
	h.open(sid(1))
	h.open(sid(2))
	o := h.apply(fsm.OpenSession{Time: h.stamp(0), ID: sid(3), Nonce: 3, Timeout: 5 * time.Second})
	if o.Status != fsm.StatusTooManySessions || !errors.Is(o.Err(), fsm.ErrTooManySessions) {
		t.Fatalf("status %v", o.Status)
	}
	h.apply(fsm.CloseSession{Time: h.stamp(0), Session: sid(1)})
	h.open(sid(3))
}

func TestClusterTimeIsMaxStamp(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.apply(fsm.RecordLiveness{Time: 500})
	h.apply(fsm.RecordLiveness{Time: 300}) // a leader whose clock is behind
	if c := h.m.Clock(); c != 500 {
		t.Fatalf("clock %d, want 500", c)
	}
	h.apply(fsm.RecordLiveness{Time: 700})
	if c := h.m.Stats().Clock; c != 700 {
		t.Fatalf("clock %d, want 700", c)
	}
}

func TestExpiry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		run    func(h *harness) fsm.Outcome
		status fsm.Status
		live   bool
	}{
		{"expires after timeout", func(h *harness) fsm.Outcome {
			info, _ := h.m.Session(sid(1))
			return h.apply(fsm.ExpireSession{Time: h.stamp(11 * time.Second), Session: sid(1), LivenessStamp: info.Liveness})
		}, fsm.StatusOK, false},
		{"newer liveness wins", func(h *harness) fsm.Outcome {
			info, _ := h.m.Session(sid(1))
			// The leader decided on info.Liveness; a keep-alive batch
			// recorded after the decision lands first.
			h.apply(fsm.RecordLiveness{Time: h.stamp(11 * time.Second), Sessions: []fsm.SessionID{sid(1)}})
			return h.apply(fsm.ExpireSession{Time: h.stamp(time.Millisecond), Session: sid(1), LivenessStamp: info.Liveness})
		}, fsm.StatusStale, true},
		{"request raced the decision", func(h *harness) fsm.Outcome {
			info, _ := h.m.Session(sid(1))
			h.stamp(11 * time.Second)
			h.request(sid(1), 1, 1, "echo:x")
			return h.apply(fsm.ExpireSession{Time: h.stamp(0), Session: sid(1), LivenessStamp: info.Liveness})
		}, fsm.StatusStale, true},
		{"the leader's decision is not second-guessed by cluster time", func(h *harness) fsm.Outcome {
			// An old leader 30 s ahead stamped the last record, so cluster
			// time stands 30 s ahead of the new leader's stamps and moves
			// no further while they are behind it. The new leader, having
			// not heard from the session for its timeout on its own clock,
			// expires it: the machine must not answer NotDue for 30 s.
			h.apply(fsm.RecordLiveness{Time: h.now.Add(30 * time.Second), Sessions: []fsm.SessionID{sid(1)}})
			info, _ := h.m.Session(sid(1))
			return h.apply(fsm.ExpireSession{Time: h.stamp(11 * time.Second), Session: sid(1), LivenessStamp: info.Liveness})
		}, fsm.StatusOK, false},
		{"expiry right after the record it saw", func(h *harness) fsm.Outcome {
			// Cluster time is not the judge of due-ness: the leader is.
			info, _ := h.m.Session(sid(1))
			return h.apply(fsm.ExpireSession{Time: h.stamp(time.Second), Session: sid(1), LivenessStamp: info.Liveness})
		}, fsm.StatusOK, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, fsm.DefaultConfig())
			h.open(sid(1))
			o := tc.run(h)
			if o.Status != tc.status {
				t.Fatalf("status %v, want %v", o.Status, tc.status)
			}
			_, err := h.m.Session(sid(1))
			if (err == nil) != tc.live {
				t.Fatalf("live=%v, want %v", err == nil, tc.live)
			}
			if !tc.live {
				if len(h.obs.removed) != 1 || h.obs.removed[0] != (removed{sid(1), fsm.RemovedExpired}) {
					t.Fatalf("observer removals %+v", h.obs.removed)
				}
				if len(h.app.closed) != 1 || h.app.closed[0].reason != fsm.RemovedExpired {
					t.Fatalf("application closes %+v", h.app.closed)
				}
			} else if len(h.obs.removed)+len(h.app.closed) != 0 {
				t.Fatal("a live session was reported removed")
			}
		})
	}
}

func TestRecordLivenessUsesClusterTime(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	h.apply(fsm.RecordLiveness{Time: h.stamp(time.Second), Sessions: []fsm.SessionID{sid(1), sid(9)}})
	before := h.now
	h.apply(fsm.RecordLiveness{Time: before.Add(-time.Hour), Sessions: []fsm.SessionID{sid(1)}})
	info, _ := h.m.Session(sid(1))
	if info.Liveness != before {
		t.Fatalf("liveness %d, want %d (a lagging stamp must not move it back)", info.Liveness, before)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1))
	h.open(sid(2))
	h.request(sid(1), 1, 1, "echo:x|emit:"+sid(1).String()+":mine")
	if o := h.apply(fsm.CloseSession{Time: h.stamp(0), Session: sid(1)}); o.Status != fsm.StatusOK {
		t.Fatal(o.Status)
	}
	st := h.m.Stats()
	if st.Sessions != 1 || st.CachedResponses != 0 || st.PendingServerRequests != 0 || st.Tombstones != 1 {
		t.Fatalf("stats after close %+v", st)
	}
	if len(h.app.closed) != 1 || h.app.closed[0].reason != fsm.RemovedClosed ||
		len(h.app.closed[0].dropped) != 1 || string(h.app.closed[0].dropped[0].Payload) != "mine" {
		t.Fatalf("application close call %+v", h.app.closed)
	}
	if o := h.apply(fsm.CloseSession{Time: h.stamp(0), Session: sid(1)}); o.Status != fsm.StatusSessionClosed {
		t.Fatalf("second close %v", o.Status)
	}
	// The open key is free again: a retry with the old nonce makes a new session.
	o := h.apply(fsm.OpenSession{Time: h.stamp(0), ID: sid(5), SecretHash: hashOf(1), Nonce: 1, Timeout: 10 * time.Second})
	if o.Status != fsm.StatusSessionOpened {
		t.Fatalf("reopen %v", o.Status)
	}
}

func TestTombstonesAreBounded(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxTombstones = 3
	h := newHarness(t, cfg)
	for i := byte(1); i <= 10; i++ {
		h.open(sid(i))
		h.apply(fsm.CloseSession{Time: h.stamp(0), Session: sid(i)})
	}
	if n := h.m.Stats().Tombstones; n != 3 {
		t.Fatalf("%d tombstones, want 3", n)
	}
	if o := h.request(sid(10), 1, 1, "x"); o.Status != fsm.StatusSessionClosed {
		t.Fatalf("recent: %v", o.Status)
	}
	if o := h.request(sid(1), 1, 1, "x"); o.Status != fsm.StatusSessionNotFound {
		t.Fatalf("forgotten: %v", o.Status)
	}
	// Snapshot keeps exactly the remembered ones, in order.
	var buf bytes.Buffer
	if err := h.m.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, cfg)
	if err := h2.m.RecoverFromSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if h2.hash() != h.hash() {
		t.Fatal("hash differs after restore")
	}
}

func TestAppCommandRunsWithoutSession(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	o := h.appCommand("echo:job")
	if o.Status != fsm.StatusOK || string(o.Payload) != "job#1" {
		t.Fatalf("%+v", o)
	}
	// Not deduplicated: the same payload runs again.
	if o := h.appCommand("echo:job"); string(o.Payload) != "job#2" {
		t.Fatalf("%+v", o)
	}
	if h.m.Stats().CachedResponses != 0 {
		t.Fatal("an application command was cached")
	}
}

func TestMalformedAndUnknownEntries(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	before := h.hash()
	r, err := h.m.Apply([]byte{fsm.CommandVersion, byte(fsm.TypeClientRequest), 1, 2})
	if err != nil {
		t.Fatalf("malformed entry returned error %v, want a result", err)
	}
	if o, _ := fsm.DecodeResult(r); o.Status != fsm.StatusInvalid {
		t.Fatalf("status %v", o.Status)
	}
	if st := h.m.Stats(); st.Applied != 1 || st.Clock != 0 {
		t.Fatalf("stats %+v", st)
	}
	if h.hash() == before {
		t.Fatal("applied count is not part of the state")
	}
	for _, entry := range [][]byte{
		{fsm.CommandVersion + 1, byte(fsm.TypeCloseSession)},
		{0, byte(fsm.TypeCloseSession)},
		{fsm.CommandVersion, 200, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		if _, err := h.m.Apply(entry); !errors.Is(err, fsm.ErrUnknownVersion) {
			t.Fatalf("entry %v: error %v, want ErrUnknownVersion", entry, err)
		}
	}
}

func TestQueries(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	for i := byte(1); i <= 9; i++ {
		h.open(sid(i), worker())
	}
	all := h.m.Sessions(fsm.SessionID{}, 0)
	if len(all) != 9 {
		t.Fatalf("%d sessions", len(all))
	}
	var paged []fsm.SessionInfo
	var after fsm.SessionID
	for {
		page := h.m.Sessions(after, 4)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].ID
	}
	if len(paged) != 9 {
		t.Fatalf("paged %d sessions", len(paged))
	}
	for i := range all {
		if all[i].ID != sid(byte(i+1)) || paged[i].ID != all[i].ID {
			t.Fatalf("order: all[%d]=%v paged=%v", i, all[i].ID, paged[i].ID)
		}
		if !all[i].HasCapability(worker()) || all[i].Timeout != 10*time.Second || all[i].SecretHash != hashOf(byte(i+1)) {
			t.Fatalf("info %+v", all[i])
		}
	}

	for i := 0; i < 5; i++ {
		h.appCommand("emit:" + sid(1).String() + ":p")
	}
	reqs, err := h.m.Pending(sid(1), 2, 2)
	if err != nil || len(reqs) != 2 || reqs[0].ID != 3 || reqs[1].ID != 4 {
		t.Fatalf("pending after 2 limit 2: %+v %v", reqs, err)
	}
	if reqs, _ := h.m.Pending(sid(1), ^uint64(0), 0); len(reqs) != 0 {
		t.Fatalf("pending after max: %+v", reqs)
	}
	if _, err := h.m.Pending(sid(99), 0, 0); !errors.Is(err, fsm.ErrSessionNotFound) {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		q    any
		want func(any) bool
	}{
		{fsm.SessionQuery{ID: sid(2)}, func(v any) bool { return v.(fsm.SessionInfo).ID == sid(2) }},
		{fsm.SessionsQuery{Limit: 3}, func(v any) bool { return len(v.([]fsm.SessionInfo)) == 3 }},
		{fsm.PendingQuery{Session: sid(1)}, func(v any) bool { return len(v.([]fsm.ServerRequest)) == 5 }},
		{fsm.StatsQuery{}, func(v any) bool { return v.(fsm.Stats).Sessions == 9 && v.(fsm.Stats).PendingServerRequests == 5 }},
		{fsm.HashQuery{}, func(v any) bool { return v.(uint64) == h.hash() }},
		{[]byte("calls"), func(v any) bool { return string(v.([]byte)) == "5" }},
	} {
		v, err := h.m.Lookup(tc.q)
		if err != nil || !tc.want(v) {
			t.Fatalf("Lookup(%T) = %v, %v", tc.q, v, err)
		}
	}
	if _, err := h.m.Lookup(42); !errors.Is(err, fsm.ErrUnknownQuery) {
		t.Fatalf("unknown query error %v", err)
	}
	if _, err := h.m.Lookup([]byte("nope")); err == nil {
		t.Fatal("application query error lost")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := fsm.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := fsm.DefaultConfig()
	bad.MaxUnassigned = 0
	if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), "fsm: ") {
		t.Fatalf("error %v", err)
	}
	bad = fsm.DefaultConfig()
	bad.MaxSessionTimeout = bad.MinSessionTimeout - 1
	if bad.Validate() == nil {
		t.Fatal("empty timeout range accepted")
	}
	if _, err := fsm.New(nil, fsm.DefaultConfig(), nil); err == nil {
		t.Fatal("nil application accepted")
	}
	if _, err := fsm.New(&testApp{}, bad, nil); err == nil {
		t.Fatal("bad config accepted")
	}
}

func TestStatusStringsAreDistinct(t *testing.T) {
	seen := map[string]bool{}
	for s := fsm.StatusOK; s <= fsm.StatusSessionExists; s++ {
		name := s.String()
		if seen[name] || strings.HasPrefix(name, "Status(") {
			t.Fatalf("status %d name %q", s, name)
		}
		seen[name] = true
	}
	if !slices.Contains([]string{"Status(99)"}, fsm.Status(99).String()) {
		t.Fatal(fsm.Status(99).String())
	}
}

// An application's refusal past the quota is StatusQuotaExceeded with its
// message (not an application error), cached like any result, and matches
// ErrQuotaExceeded; commands that shrink the state still run.
func TestQuotaExceededStatus(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.QuotaBytes = 100
	h := newHarness(t, cfg)
	h.open(sid(1))
	if o := h.request(sid(1), 1, 1, "grow:80"); o.Status != fsm.StatusOK {
		t.Fatalf("grow under the quota: %+v", o)
	}
	o := h.request(sid(1), 2, 1, "grow:30")
	if o.Status != fsm.StatusQuotaExceeded || !errors.Is(o.Err(), fsm.ErrQuotaExceeded) || !strings.Contains(o.Message, "80 + 30 over 100") {
		t.Fatalf("grow past the quota: %+v, err %v", o, o.Err())
	}
	if again := h.request(sid(1), 2, 1, "grow:30"); again.Status != fsm.StatusQuotaExceeded || again.Message != o.Message {
		t.Fatalf("resent refusal: %+v, want the cached %+v", again, o)
	}
	if o := h.request(sid(1), 3, 1, "grow:-50"); o.Status != fsm.StatusOK {
		t.Fatalf("shrink at the quota: %+v", o)
	}
	if o := h.request(sid(1), 4, 1, "grow:30"); o.Status != fsm.StatusOK {
		t.Fatalf("grow after shrinking: %+v", o)
	}
	neg := fsm.DefaultConfig()
	neg.QuotaBytes = -1
	if err := neg.Validate(); err == nil || !strings.Contains(err.Error(), "QuotaBytes") {
		t.Fatalf("a negative quota: Validate = %v", err)
	}
}
