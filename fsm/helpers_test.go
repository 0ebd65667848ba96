package fsm_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// testApp is a small deterministic Application driven by text commands, so
// that tests can read what they propose. A command is ops joined by "|":
//
//	echo:X             result "X#n" where n counts application calls
//	fail:CODE          returns an *fsm.AppError with CODE
//	plain              returns a plain error (code 0)
//	big:N              returns N bytes
//	emit:HEXID:P       Emit(ToSession(id), P)
//	cap:NAME=VALUE:P   Emit(ToCapable(NAME=VALUE), P)
//	grow:N             adds N to size, refused with ErrQuotaExceeded past ctx.Quota()
//
// Emit errors are recorded in emitErrs (not replicated state). The replicated
// state is calls plus a digest of every command applied, closed sessions and
// dropped work; it goes into the snapshot.
type testApp struct {
	calls    uint64
	digest   uint64
	closed   []closedCall // test observation; its count is in the snapshot
	emitErrs []error
	opened   int
	size     int64
}

type closedCall struct {
	id      fsm.SessionID
	reason  fsm.RemoveReason
	dropped []fsm.ServerRequest
}

func (a *testApp) mix(b []byte) {
	h := fnv.New64a()
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], a.digest)
	h.Write(x[:])
	h.Write(b)
	a.digest = h.Sum64()
}

func (a *testApp) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	a.calls++
	a.mix(cmd)
	var out []string
	for _, op := range strings.Split(string(cmd), "|") {
		kind, arg, _ := strings.Cut(op, ":")
		switch kind {
		case "echo":
			out = append(out, fmt.Sprintf("%s#%d", arg, a.calls))
		case "fail":
			code, _ := strconv.Atoi(arg)
			return nil, &fsm.AppError{Code: uint32(code), Message: "boom " + arg}
		case "plain":
			return nil, errors.New("plain failure")
		case "grow":
			n, _ := strconv.ParseInt(arg, 10, 64)
			if q := ctx.Quota(); q > 0 && n > 0 && a.size+n > q {
				return nil, fmt.Errorf("%w: %d + %d over %d", fsm.ErrQuotaExceeded, a.size, n, q)
			}
			a.size += n
		case "big":
			n, _ := strconv.Atoi(arg)
			return make([]byte, n), nil
		case "emit":
			h, p, _ := strings.Cut(arg, ":")
			var id fsm.SessionID
			b, _ := hex.DecodeString(h)
			copy(id[:], b)
			a.recordEmit(ctx.Emit(fsm.ToSession(id), []byte(p)))
		case "cap":
			sel, p, _ := strings.Cut(arg, ":")
			name, value, _ := strings.Cut(sel, "=")
			a.recordEmit(ctx.Emit(fsm.ToCapable(fsm.Capability{Name: name, Value: value}), []byte(p)))
		}
	}
	return []byte(strings.Join(out, ",")), nil
}

func (a *testApp) recordEmit(err error) {
	if err != nil {
		a.emitErrs = append(a.emitErrs, err)
	}
}

func (a *testApp) Query(q []byte) ([]byte, error) {
	if string(q) == "calls" {
		return []byte(strconv.FormatUint(a.calls, 10)), nil
	}
	return nil, &fsm.AppError{Code: 99, Message: "unknown query"}
}

func (a *testApp) SessionOpened(_ *fsm.Context, info fsm.SessionInfo) error {
	if info.HasCapability(fsm.Capability{Name: "reject", Value: "yes"}) {
		return errors.New("not welcome here")
	}
	a.opened++
	a.mix(info.ID[:])
	return nil
}

func (a *testApp) SessionClosed(_ *fsm.Context, id fsm.SessionID, reason fsm.RemoveReason, dropped []fsm.ServerRequest) {
	a.closed = append(a.closed, closedCall{id: id, reason: reason, dropped: dropped})
	a.mix(id[:])
	for _, d := range dropped {
		a.mix(d.Payload)
	}
}

func (a *testApp) SaveSnapshot(w io.Writer) error {
	var b []byte
	b = binary.BigEndian.AppendUint64(b, a.calls)
	b = binary.BigEndian.AppendUint64(b, a.digest)
	b = binary.BigEndian.AppendUint64(b, uint64(a.opened))
	_, err := w.Write(b)
	return err
}

func (a *testApp) RecoverFromSnapshot(r io.Reader) error {
	var b [24]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	a.calls = binary.BigEndian.Uint64(b[:])
	a.digest = binary.BigEndian.Uint64(b[8:])
	a.opened = int(binary.BigEndian.Uint64(b[16:]))
	return nil
}

// recorder is an Observer that records every call.
type recorder struct {
	added   []added
	removed []removed
}

type added struct {
	session fsm.SessionID
	req     fsm.ServerRequest
}

type removed struct {
	session fsm.SessionID
	reason  fsm.RemoveReason
}

func (r *recorder) ServerRequestAdded(s fsm.SessionID, req fsm.ServerRequest) {
	r.added = append(r.added, added{s, req})
}

func (r *recorder) SessionRemoved(s fsm.SessionID, reason fsm.RemoveReason) {
	r.removed = append(r.removed, removed{s, reason})
}

// harness bundles a machine with its app and observer and a clock that the
// test advances explicitly.
type harness struct {
	t   testing.TB
	m   *fsm.Machine
	app *testApp
	obs *recorder
	now fsm.ClusterTime
}

func newHarness(t testing.TB, cfg fsm.Config) *harness {
	t.Helper()
	app := &testApp{}
	obs := &recorder{}
	m, err := fsm.New(app, cfg, obs)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, m: m, app: app, obs: obs, now: fsm.ClusterTime(1_000_000_000_000)}
}

func sid(n byte) fsm.SessionID {
	var id fsm.SessionID
	id[15] = n
	return id
}

func hashOf(n byte) fsm.SecretHash {
	var h fsm.SecretHash
	h[0] = n
	return h
}

// stamp advances the harness clock by d and returns it.
func (h *harness) stamp(d time.Duration) fsm.ClusterTime {
	h.now = h.now.Add(d)
	return h.now
}

// apply encodes, applies and decodes one command.
func (h *harness) apply(cmd fsm.Command) fsm.Outcome {
	h.t.Helper()
	r := h.raw(cmd)
	o, err := fsm.DecodeResult(r)
	if err != nil {
		h.t.Fatalf("decode result %+v: %v", r, err)
	}
	return o
}

func (h *harness) raw(cmd fsm.Command) fsm.Result {
	h.t.Helper()
	r, err := h.m.Apply(fsm.EncodeCommand(nil, cmd))
	if err != nil {
		h.t.Fatalf("apply %T: %v", cmd, err)
	}
	return r
}

func (h *harness) open(id fsm.SessionID, caps ...fsm.Capability) {
	h.t.Helper()
	o := h.apply(fsm.OpenSession{Time: h.stamp(time.Millisecond), ID: id, SecretHash: hashOf(id[15]),
		Nonce: uint64(id[15]), Capabilities: caps, Timeout: 10 * time.Second})
	if o.Status != fsm.StatusSessionOpened || o.Session != id {
		h.t.Fatalf("open %v: %+v", id, o)
	}
}

func (h *harness) request(id fsm.SessionID, req, lowest uint64, payload string) fsm.Outcome {
	h.t.Helper()
	return h.apply(fsm.ClientRequest{Time: h.stamp(time.Millisecond), Session: id, RequestID: req,
		LowestPending: lowest, Payload: []byte(payload)})
}

func (h *harness) appCommand(payload string) fsm.Outcome {
	h.t.Helper()
	return h.apply(fsm.AppCommand{Time: h.stamp(time.Millisecond), Payload: []byte(payload)})
}

func (h *harness) pendingIDs(id fsm.SessionID) []uint64 {
	h.t.Helper()
	reqs, err := h.m.Pending(id, 0, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	ids := make([]uint64, len(reqs))
	for i, r := range reqs {
		ids[i] = r.ID
	}
	return ids
}

func (h *harness) hash() uint64 {
	h.t.Helper()
	v, err := h.m.Hash()
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

func worker() fsm.Capability { return fsm.Capability{Name: "role", Value: "worker"} }
