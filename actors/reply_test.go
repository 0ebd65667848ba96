package actors

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

func TestRequestReplyMapsEveryOutcome(t *testing.T) {
	appErr := binary.BigEndian.AppendUint32(nil, 42)
	appErr = append(appErr, "boom"...)
	for _, tc := range []struct {
		name string
		p    Proposed
		want codec.Message
	}{
		{"ok", Proposed{Value: uint64(fsm.StatusOK), Data: []byte("r")}, &codec.ClientResponse{RequestID: 7, Result: []byte("r")}},
		{"app error", Proposed{Value: uint64(fsm.StatusAppError), Data: appErr},
			&codec.RequestError{RequestID: 7, Reason: codec.CodeApplication, AppCode: 42, Message: "boom"}},
		{"expired", Proposed{Value: uint64(fsm.StatusSessionExpired)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeSessionExpired}},
		{"unknown session", Proposed{Value: uint64(fsm.StatusSessionNotFound)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeSessionNotFound}},
		{"evicted", Proposed{Value: uint64(fsm.StatusResponseEvicted)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeResponseEvicted}},
		{"in flight", Proposed{Value: uint64(fsm.StatusTooManyInFlight)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeTooManyInFlight}},
		{"out of order", Proposed{Value: uint64(fsm.StatusOutOfOrder)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeOutOfOrder}},
		{"quota exceeded", Proposed{Value: uint64(fsm.StatusQuotaExceeded), Data: []byte("kv: storage quota exceeded")},
			&codec.RequestError{RequestID: 7, Reason: codec.CodeQuotaExceeded, Message: "kv: storage quota exceeded"}},
		{"too large", Proposed{Value: uint64(fsm.StatusResultTooLarge)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeTooLarge}},
		{"busy", Proposed{Err: fmt.Errorf("%w: x", ErrOverloaded)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeOverloaded}},
		{"timeout", Proposed{Err: fmt.Errorf("%w: x", ErrOutcomeUnknown)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeOutcomeUnknown}},
		{"no leader", Proposed{Err: fmt.Errorf("%w: x", ErrUnavailable)}, &codec.RequestError{RequestID: 7, Reason: codec.CodeClusterUnavailable}},
		{"garbage result", Proposed{Value: 999}, &codec.RequestError{RequestID: 7, Reason: codec.CodeInternal}},
	} {
		got := requestReply(7, &tc.p)
		switch w := tc.want.(type) {
		case *codec.ClientResponse:
			g, ok := got.(*codec.ClientResponse)
			if !ok || g.RequestID != w.RequestID || string(g.Result) != string(w.Result) {
				t.Errorf("%s: got %#v, want %#v", tc.name, got, w)
			}
		case *codec.RequestError:
			g, ok := got.(*codec.RequestError)
			if !ok || g.RequestID != w.RequestID || g.Reason != w.Reason || g.AppCode != w.AppCode ||
				(w.Message != "" && g.Message != w.Message) {
				t.Errorf("%s: got %#v, want %#v", tc.name, got, w)
			}
		}
		// Every reply must be encodable: a reply that fails to encode is
		// a reply the client never gets.
		if _, err := codec.Encode(got); err != nil {
			t.Errorf("%s: reply does not encode: %v", tc.name, err)
		}
	}
}

func TestErrCodeClassifiesStateMachineErrors(t *testing.T) {
	for err, want := range map[error]codec.Code{
		fsm.ErrSessionNotFound:                     codec.CodeSessionNotFound,
		fmt.Errorf("x: %w", fsm.ErrSessionExpired): codec.CodeSessionExpired,
		fsm.ErrSessionClosed:                       codec.CodeSessionNotFound,
		fmt.Errorf("weird"):                        codec.CodeInternal,
	} {
		if got := errCode(err); got != want {
			t.Errorf("errCode(%v) = %v, want %v", err, got, want)
		}
	}
}

func TestClipMakesMessagesEncodable(t *testing.T) {
	e := &Env{Settings: Settings{Limits: codec.DefaultLimits()}}
	long := string([]byte{0xff, 0xfe}) + strings.Repeat("é", 400)
	m := &codec.RequestError{RequestID: 1, Reason: codec.CodeApplication, Message: long}
	e.clipMessage(m)
	if _, err := codec.Encode(m); err != nil {
		t.Fatalf("clipped message does not encode: %v", err)
	}
	if len(m.Message) > codec.DefaultLimits().MaxString || !strings.HasPrefix(m.Message, "?é") {
		t.Fatalf("clipped to %q", m.Message)
	}
}

func TestMergePendingKeepsOrderAndSkipsKnownAndAcked(t *testing.T) {
	req := func(id uint64) fsm.ServerRequest { return fsm.ServerRequest{ID: id} }
	ids := func(p []outgoing) []uint64 {
		var out []uint64
		for _, o := range p {
			out = append(out, o.req.ID)
		}
		return out
	}
	// A notice of 5 overtook the read of 3, 4, 5: 3 and 4 must not be lost.
	p, added := mergePending(nil, 2, []fsm.ServerRequest{req(5)})
	p[0].attempts = 1
	p, added = mergePending(p, 2, []fsm.ServerRequest{req(3), req(4), req(5), req(1)})
	if got := ids(p); fmt.Sprint(got) != "[3 4 5]" {
		t.Fatalf("pending = %v, want [3 4 5]", got)
	}
	if fmt.Sprint(added) != "[0 1]" || p[2].attempts != 1 {
		t.Fatalf("added at %v (want [0 1]); 5 kept its attempts: %d", added, p[2].attempts)
	}
}

// TestAdmitAlwaysTakesTheLowestPendingRequest checks the session actor's
// bound on requests in flight: later requests filling it must not keep out
// the session's lowest unanswered one, which the state machine needs to run
// first (issue 8's starvation), and a client cannot use that exception to
// grow the table.
func TestAdmitAlwaysTakesTheLowestPendingRequest(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := &session{env: &Env{Settings: Settings{MaxInFlight: 3, ProposalTimeout: time.Second}, Now: func() time.Time { return now }},
		inFlight: map[uint64]flight{}, reads: map[uint64]flight{}}
	for id := uint64(2); id <= 4; id++ {
		if !admitted(s, id, 1) {
			t.Fatalf("request %d refused below the bound", id)
		}
	}
	if admitted(s, 5, 1) {
		t.Fatal("request 5 admitted past the bound")
	}
	if !admitted(s, 1, 1) {
		t.Fatal("the lowest pending request was refused")
	}
	if !admitted(s, 1, 1) {
		t.Fatal("a retry of the lowest pending request was refused")
	}
	if admitted(s, 6, 6) {
		t.Fatal("a second request claiming to be the lowest pending was admitted past the bound")
	}
	if len(s.inFlight) != 4 {
		t.Fatalf("%d in flight, want MaxInFlight+1", len(s.inFlight))
	}
}

func admitted(s *session, id, lowest uint64) bool {
	code, _ := s.admit(id, lowest, 0)
	return code == 0
}

// Commands and queries hold their payload bytes of the session's budget
// and the node's until answered; past either the answer is Overloaded,
// before anything is proposed, and a stopped actor gives its bytes back.
func TestAdmitBoundsBytesInFlight(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	node := NewByteBudget(250)
	env := &Env{Settings: Settings{MaxInFlight: 100, MaxSessionBytes: 150, ProposalTimeout: time.Second},
		Now: func() time.Time { return now }, Bytes: node}
	a := &session{env: env, inFlight: map[uint64]flight{}, reads: map[uint64]flight{}}
	b := &session{env: env, inFlight: map[uint64]flight{}, reads: map[uint64]flight{}}
	if code, _ := a.admit(1, 1, 100); code != 0 {
		t.Fatalf("first command refused: %v", code)
	}
	if code, reason := a.admit(2, 1, 100); code != codec.CodeOverloaded || reason != "session_bytes" {
		t.Fatalf("command past the session's bytes = %v %q, want Overloaded session_bytes", code, reason)
	}
	if _, reason := a.admitRead(50); reason != "" {
		t.Fatalf("a query within the session's bytes was refused: %q", reason)
	}
	if _, reason := b.admitRead(101); reason != "node_bytes" {
		t.Fatalf("a query past the node's bytes: %q, want node_bytes", reason)
	}
	if code, _ := b.admit(1, 1, 100); code != 0 {
		t.Fatalf("another session's command refused: %v", code)
	}
	if code, reason := b.admit(2, 1, 1); code != codec.CodeOverloaded || reason != "node_bytes" {
		t.Fatalf("command past the node's bytes = %v %q, want Overloaded node_bytes", code, reason)
	}
	if node.Used() != 250 || a.bytes != 150 || b.bytes != 100 {
		t.Fatalf("held: node %d, a %d, b %d; want 250, 150, 100", node.Used(), a.bytes, b.bytes)
	}
	// Answers release; a reply for something not held releases nothing.
	a.proposed(&Proposed{Tag: requestTag{id: 1}, Err: ErrOverloaded})
	a.proposed(&Proposed{Tag: requestTag{id: 1}, Err: ErrOverloaded})
	if node.Used() != 150 || a.bytes != 50 {
		t.Fatalf("after the answer: node %d, a %d; want 150, 50", node.Used(), a.bytes)
	}
	// Entries whose replies were lost are forgotten after twice the
	// proposal timeout, and their bytes with them.
	now = now.Add(3 * time.Second)
	if code, _ := b.admit(2, 1, 150); code != 0 {
		t.Fatalf("command after b's lost reply was forgotten: %v", code)
	}
	if b.bytes != 150 || node.Used() != 200 {
		t.Fatalf("after forgetting: node %d, b %d; want 200, 150", node.Used(), b.bytes)
	}
}
