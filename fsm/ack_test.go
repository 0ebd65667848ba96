package fsm_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// ackApp is testApp plus the AckObserver interface and a "place:P" command
// that places P with ToCapable(role=worker) and records the Placement.
type ackApp struct {
	*testApp
	acks   []ackCall
	placed []fsm.Placement
	// pendingSeen is ctx.Pending(session) observed inside each ack call.
	pendingSeen []int
}

type ackCall struct {
	session  fsm.SessionID
	ctxSess  fsm.SessionID
	ids      []uint64
	payloads []string
}

func (a *ackApp) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	if p, ok := strings.CutPrefix(string(cmd), "place:"); ok {
		pl, err := ctx.Place(fsm.ToCapable(worker()), []byte(p))
		if err != nil {
			return nil, err
		}
		a.placed = append(a.placed, pl)
		return []byte(pl.String()), nil
	}
	return a.testApp.Apply(ctx, cmd)
}

func (a *ackApp) ServerRequestsAcked(ctx *fsm.Context, s fsm.SessionID, reqs []fsm.ServerRequest) {
	c := ackCall{session: s, ctxSess: ctx.Session()}
	a.pendingSeen = append(a.pendingSeen, ctx.Pending(s))
	for _, r := range reqs {
		c.ids = append(c.ids, r.ID)
		c.payloads = append(c.payloads, string(r.Payload))
		if string(r.Payload) == "chain" {
			// An ack may start the next step.
			a.recordEmit(ctx.Emit(fsm.ToCapable(worker()), []byte("next")))
		}
	}
	a.acks = append(a.acks, c)
}

func newAckHarness(t *testing.T, cfg fsm.Config) (*harness, *ackApp) {
	t.Helper()
	h := newHarness(t, cfg)
	app := &ackApp{testApp: h.app}
	m, err := fsm.New(app, cfg, h.obs)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	return h, app
}

func TestPlaceReportsChosenSessionOrQueued(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxPendingServerRequests = 1
	h, app := newAckHarness(t, cfg)
	if o := h.appCommand("place:j0"); o.Status != fsm.StatusOK || string(o.Payload) != "queued: no capable session with room" {
		t.Fatalf("place with no worker: %+v", o)
	}
	h.open(sid(2), worker())
	h.open(sid(1), worker())
	// j0 was drained to session 2 when it opened. j1 goes to session 1
	// (fewest pending), then both are full and j2 waits.
	h.appCommand("place:j1")
	h.appCommand("place:j2")
	want := []fsm.Placement{{Queued: true}, {Session: sid(1), ID: 1}, {Queued: true}}
	if len(app.placed) != len(want) {
		t.Fatalf("placements %+v", app.placed)
	}
	for i, w := range want {
		if app.placed[i] != w {
			t.Fatalf("placement %d = %+v, want %+v", i, app.placed[i], w)
		}
	}
	if got := app.placed[1].String(); got != "session "+sid(1).String()+" request 1" {
		t.Fatalf("String %q", got)
	}
	// Place to a session that is not live fails like Emit and places nothing.
	h.appCommand(emitTo(sid(9), "x"))
	if len(app.emitErrs) != 1 || !errors.Is(app.emitErrs[0], fsm.ErrSessionNotFound) {
		t.Fatalf("emit errors %v", app.emitErrs)
	}
}

func TestAckObserverSeesAcknowledgedRequests(t *testing.T) {
	h, app := newAckHarness(t, fsm.DefaultConfig())
	a, b := sid(1), sid(2)
	h.open(a, worker())
	h.open(b)
	h.appCommand(emitTo(a, "a1") + "|" + emitTo(a, "chain") + "|" + emitTo(a, "a3") + "|" + emitTo(b, "b1"))
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: b, UpTo: 1}, {Session: a, UpTo: 2}}})
	if len(app.acks) != 2 {
		t.Fatalf("ack calls %+v", app.acks)
	}
	// In the command's order, each with its session's acknowledged prefix.
	if c := app.acks[0]; c.session != b || c.ctxSess != b || len(c.ids) != 1 || c.payloads[0] != "b1" {
		t.Fatalf("first call %+v", c)
	}
	if c := app.acks[1]; c.session != a || c.ctxSess != a || len(c.ids) != 2 || c.ids[1] != 2 || c.payloads[0] != "a1" || c.payloads[1] != "chain" {
		t.Fatalf("second call %+v", c)
	}
	// Pending excludes the acknowledged ones; the chained Emit went to a
	// (the only worker) as id 4, after the pending count was read.
	if app.pendingSeen[1] != 1 {
		t.Fatalf("pending seen in callback %d, want 1", app.pendingSeen[1])
	}
	if got := h.pendingIDs(a); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("a pending %v", got)
	}
	// A repeated or older ack changes nothing and calls nothing.
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: a, UpTo: 2}, {Session: b, UpTo: 1}}})
	if len(app.acks) != 2 {
		t.Fatalf("repeated ack made calls %+v", app.acks[2:])
	}
}

func TestAckObserverIsDeterministicAcrossReplicas(t *testing.T) {
	run := func() uint64 {
		h, _ := newAckHarness(t, fsm.DefaultConfig())
		h.open(sid(1), worker())
		h.open(sid(2), worker())
		h.appCommand("place:chain")
		h.appCommand("place:x")
		h.appCommand("place:chain")
		h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: sid(1), UpTo: 2}, {Session: sid(2), UpTo: 1}}})
		return h.hash()
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("replicas diverge: %x vs %x", a, b)
	}
}

func TestParseSessionID(t *testing.T) {
	id := sid(42)
	got, err := fsm.ParseSessionID(id.String())
	if err != nil || got != id {
		t.Fatalf("round trip: %v %v", got, err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("z", 32), strings.Repeat("0", 34)} {
		if _, err := fsm.ParseSessionID(bad); !errors.Is(err, fsm.ErrMalformed) {
			t.Fatalf("ParseSessionID(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

// moveApp is ackApp that also follows moves.
type moveApp struct {
	*ackApp
	moves []moveCall
}

type moveCall struct {
	from, ctxSess fsm.SessionID
	oldID         uint64
	payload       string
	to            fsm.Placement
}

func (a *moveApp) ServerRequestMoved(ctx *fsm.Context, from fsm.SessionID, req fsm.ServerRequest, to fsm.Placement) {
	a.moves = append(a.moves, moveCall{from: from, ctxSess: ctx.Session(), oldID: req.ID, payload: string(req.Payload), to: to})
}

func TestMoveObserverFollowsWorkToItsNewHolder(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxPendingServerRequests = 2
	h := newHarness(t, cfg)
	app := &moveApp{ackApp: &ackApp{testApp: h.app}}
	m, err := fsm.New(app, cfg, h.obs)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	a, b := sid(1), sid(2)
	h.open(a, worker())
	for _, j := range []string{"j1", "j2", "j3"} { // j1, j2 to a; j3 queued
		h.appCommand("place:" + j)
	}
	h.open(b, worker()) // j3 drained to b
	if len(app.moves) != 1 {
		t.Fatalf("moves after open %+v", app.moves)
	}
	if mv := app.moves[0]; !mv.from.IsZero() || !mv.ctxSess.IsZero() || mv.oldID != 0 || mv.payload != "j3" || mv.to != (fsm.Placement{Session: b, ID: 1}) {
		t.Fatalf("drain move %+v", mv)
	}
	// a closes: j1 moves to b (room for one), j2 waits in the queue.
	h.apply(fsm.CloseSession{Time: h.stamp(0), Session: a})
	want := []moveCall{
		{from: a, ctxSess: a, oldID: 1, payload: "j1", to: fsm.Placement{Session: b, ID: 2}},
		{from: a, ctxSess: a, oldID: 2, payload: "j2", to: fsm.Placement{Queued: true}},
	}
	if got := app.moves[1:]; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("close moves %+v, want %+v", got, want)
	}
	// An ack frees room on b: j2 leaves the queue for b.
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: b, UpTo: 1}}})
	if got := app.moves[3:]; len(got) != 1 || got[0].payload != "j2" || got[0].to != (fsm.Placement{Session: b, ID: 3}) {
		t.Fatalf("ack moves %+v", got)
	}
	if len(app.acks) != 1 || app.acks[0].payloads[0] != "j3" {
		t.Fatalf("acks %+v", app.acks)
	}
}

func inFlight(n string) fsm.Capability { return fsm.Capability{Name: fsm.CapMaxInFlight, Value: n} }

func TestMaxInFlightCapabilityLimitsSelectorWork(t *testing.T) {
	h, app := newAckHarness(t, fsm.DefaultConfig())
	a, b := sid(1), sid(2)
	// Capabilities are sorted by name: "role" < "zraft.max_in_flight".
	h.open(a, worker(), inFlight("1"))
	h.open(b, worker(), inFlight("2"))
	for _, j := range []string{"j1", "j2", "j3", "j4", "j5"} {
		h.appCommand("place:" + j)
	}
	// j1 -> a (tie, smaller id), j2 -> b, a is full, j3 -> b, both full.
	want := []fsm.Placement{{Session: a, ID: 1}, {Session: b, ID: 1}, {Session: b, ID: 2}, {Queued: true}, {Queued: true}}
	for i, w := range want {
		if app.placed[i] != w {
			t.Fatalf("placement %d = %+v, want %+v (all %+v)", i, app.placed[i], w, app.placed)
		}
	}
	// ToSession work is not limited by the capability.
	h.appCommand(emitTo(a, "direct"))
	if len(app.emitErrs) != 0 || len(h.pendingIDs(a)) != 2 {
		t.Fatalf("direct emit: errs %v pending %v", app.emitErrs, h.pendingIDs(a))
	}
	// b acknowledges one: j4 takes its room, j5 still waits.
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: b, UpTo: 1}}})
	if got := h.pendingIDs(b); len(got) != 2 || got[1] != 3 {
		t.Fatalf("b pending %v", got)
	}
	if st := h.m.Stats(); st.Unassigned != 1 {
		t.Fatalf("unassigned %d", st.Unassigned)
	}
	// The limit survives a snapshot (it is derived from the capabilities):
	// on a restored replica, a and b are still full.
	var snap bytes.Buffer
	if err := h.m.SaveSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	r, rapp := newAckHarness(t, fsm.DefaultConfig())
	if err := r.m.RecoverFromSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	r.now = h.now
	r.appCommand("place:j6")
	if got := rapp.placed[0]; got != (fsm.Placement{Queued: true}) {
		t.Fatalf("after restore j6 placed %+v, want queued", got)
	}
}

func TestMaxInFlightCapabilityValidated(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxPendingServerRequests = 8
	h := newHarness(t, cfg)
	for i, v := range []string{"0", "-1", "9", "x", "01", "", "1.5"} {
		o := h.apply(fsm.OpenSession{Time: h.stamp(0), ID: sid(byte(10 + i)), SecretHash: hashOf(byte(10 + i)), Nonce: uint64(10 + i),
			Capabilities: []fsm.Capability{inFlight(v)}, Timeout: 10 * time.Second})
		if o.Status != fsm.StatusInvalid {
			t.Errorf("%s=%q: %v, want StatusInvalid", fsm.CapMaxInFlight, v, o.Status)
		}
	}
	h.open(sid(1), inFlight("8"))
}

// The client spells the capability out (it does not import fsm); its test
// checks the same literal.
func TestCapMaxInFlightName(t *testing.T) {
	if fsm.CapMaxInFlight != "zraft.max_in_flight" {
		t.Fatalf("CapMaxInFlight = %q; client/options.go spells it zraft.max_in_flight", fsm.CapMaxInFlight)
	}
}
