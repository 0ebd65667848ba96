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
		inFlight: map[uint64]time.Time{}}
	for id := uint64(2); id <= 4; id++ {
		if !s.admit(id, 1) {
			t.Fatalf("request %d refused below the bound", id)
		}
	}
	if s.admit(5, 1) {
		t.Fatal("request 5 admitted past the bound")
	}
	if !s.admit(1, 1) {
		t.Fatal("the lowest pending request was refused")
	}
	if !s.admit(1, 1) {
		t.Fatal("a retry of the lowest pending request was refused")
	}
	if s.admit(6, 6) {
		t.Fatal("a second request claiming to be the lowest pending was admitted past the bound")
	}
	if len(s.inFlight) != 4 {
		t.Fatalf("%d in flight, want MaxInFlight+1", len(s.inFlight))
	}
}
