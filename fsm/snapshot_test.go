package fsm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// busyHarness builds a machine with every kind of state: sessions with
// capabilities, cached results and errors, watermarks, pending direct and
// selector work, unassigned work and tombstones.
func busyHarness(t testing.TB) *harness {
	h := newHarness(t, fsm.DefaultConfig())
	h.open(sid(1), worker())
	h.open(sid(2), fsm.Capability{Name: "role", Value: "reader"})
	h.open(sid(3))
	h.request(sid(1), 1, 1, "echo:a")
	h.request(sid(1), 2, 1, "fail:3")
	h.request(sid(1), 3, 2, "echo:b|"+emitTo(sid(2), "n1"))
	h.request(sid(2), 1, 1, "cap:role=worker:j1|cap:role=nobody:j2")
	h.apply(fsm.AckServerRequests{Time: h.stamp(0), Acks: []fsm.Ack{{Session: sid(2), UpTo: 0}}})
	h.apply(fsm.CloseSession{Time: h.stamp(0), Session: sid(3)})
	h.apply(fsm.RecordLiveness{Time: h.stamp(time.Second), Sessions: []fsm.SessionID{sid(1)}})
	return h
}

func TestSnapshotRestoreEquality(t *testing.T) {
	h := busyHarness(t)
	var buf bytes.Buffer
	if err := h.m.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	snap := bytes.Clone(buf.Bytes())

	r := newHarness(t, fsm.DefaultConfig())
	r.open(sid(9)) // state that the restore must replace
	if err := r.m.RecoverFromSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := r.m.SaveSnapshot(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap, again.Bytes()) {
		t.Fatal("snapshot of the restored machine differs")
	}
	if h.m.Stats() != r.m.Stats() {
		t.Fatalf("stats differ: %+v vs %+v", h.m.Stats(), r.m.Stats())
	}
	if len(r.obs.added)+len(r.obs.removed) != 0 {
		t.Fatal("restore called the observer")
	}
	// The restored machine behaves the same: cached answers, evictions,
	// tombstones, selector indexes and the open-session index.
	r.now, r.app.emitErrs = h.now, nil
	for _, cmd := range []fsm.Command{
		fsm.ClientRequest{Time: h.now + 1, Session: sid(1), RequestID: 2, LowestPending: 2, Payload: []byte("fail:3")},
		fsm.ClientRequest{Time: h.now + 2, Session: sid(1), RequestID: 1, LowestPending: 2, Payload: []byte("echo:a")},
		fsm.ClientRequest{Time: h.now + 3, Session: sid(3), RequestID: 1, LowestPending: 1},
		fsm.OpenSession{Time: h.now + 4, ID: sid(20), SecretHash: hashOf(1), Nonce: 1, Timeout: time.Minute},
		fsm.OpenSession{Time: h.now + 5, ID: sid(4), SecretHash: hashOf(4), Nonce: 4, Timeout: time.Minute,
			Capabilities: []fsm.Capability{{Name: "role", Value: "nobody"}}},
		fsm.AppCommand{Time: h.now + 6, Payload: []byte("cap:role=worker:j3")},
		fsm.CloseSession{Time: h.now + 7, Session: sid(1)},
	} {
		a, b := h.raw(cmd), r.raw(cmd)
		if a.Value != b.Value || !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("%v: original %+v restored %+v", cmd.Type(), a, b)
		}
	}
	if h.hash() != r.hash() {
		t.Fatal("hashes diverged after replaying the same commands")
	}
	if got := r.pendingIDs(sid(4)); len(got) != 1 {
		t.Fatalf("unassigned work was not restored: pending %v", got)
	}
}

func TestSnapshotRejectsDamage(t *testing.T) {
	h := busyHarness(t)
	var buf bytes.Buffer
	if err := h.m.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	snap := buf.Bytes()
	before := h.hash()
	for _, tc := range []struct {
		name string
		b    []byte
		err  error
	}{
		{"empty", nil, fsm.ErrMalformed},
		{"not a snapshot", []byte("hello world, this is not it"), fsm.ErrMalformed},
		{"newer version", func() []byte { b := bytes.Clone(snap); b[4] = fsm.SnapshotVersion + 1; return b }(), fsm.ErrUnknownVersion},
		{"flipped bit", func() []byte { b := bytes.Clone(snap); b[40] ^= 1; return b }(), fsm.ErrMalformed},
		{"truncated", snap[:len(snap)-10], fsm.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.m.RecoverFromSnapshot(bytes.NewReader(tc.b)); !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if h.hash() != before {
				t.Fatal("a failed restore changed the state")
			}
		})
	}
}

// genCommands returns a random but valid-looking command sequence over a
// small pool of sessions, so that commands often collide: retries, evictions,
// expiries racing liveness, closes with pending work, selectors.
func genCommands(rng *rand.Rand, n int) []fsm.Command {
	now := fsm.ClusterTime(1_000_000_000)
	next := map[byte]uint64{}
	sel := []string{"role=worker", "role=reader", "zone=a"}
	caps := [][]fsm.Capability{nil, {worker()}, {{Name: "role", Value: "reader"}}, {{Name: "role", Value: "worker"}, {Name: "zone", Value: "a"}}}
	pick := func() fsm.SessionID { return sid(byte(1 + rng.IntN(8))) }
	cmds := make([]fsm.Command, 0, n)
	for range n {
		switch rng.IntN(10) {
		case 0: // a lagging leader clock now and then
			now = now.Add(-time.Duration(rng.IntN(1000)) * time.Millisecond)
		default:
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		}
		id := pick()
		var c fsm.Command
		switch rng.IntN(9) {
		case 0:
			c = fsm.OpenSession{Time: now, ID: id, SecretHash: hashOf(id[15]), Nonce: uint64(rng.IntN(3)),
				Capabilities: caps[rng.IntN(len(caps))], Timeout: time.Duration(1+rng.IntN(10)) * time.Second}
		case 1, 2, 3:
			next[id[15]]++
			req := max(int64(next[id[15]])-int64(rng.IntN(3)), 1)
			var p string
			switch rng.IntN(4) {
			case 0:
				p = "fail:" + fmt.Sprint(rng.IntN(5))
			case 1:
				p = "echo:x|" + emitTo(pick(), "d")
			case 2:
				p = "cap:" + sel[rng.IntN(len(sel))] + ":s"
			default:
				p = "echo:" + fmt.Sprint(rng.IntN(100))
			}
			c = fsm.ClientRequest{Time: now, Session: id, RequestID: uint64(req), LowestPending: uint64(req - rng.Int64N(req)), Payload: []byte(p)}
		case 4:
			c = fsm.CloseSession{Time: now, Session: id}
		case 5:
			c = fsm.RecordLiveness{Time: now, Sessions: []fsm.SessionID{id, pick()}}
		case 6:
			c = fsm.ExpireSession{Time: now, Session: id, LivenessStamp: now.Add(-time.Duration(rng.IntN(20)) * time.Second)}
		case 7:
			c = fsm.AckServerRequests{Time: now, Acks: []fsm.Ack{{Session: id, UpTo: uint64(rng.IntN(6))}, {Session: pick(), UpTo: uint64(rng.IntN(6))}}}
		default:
			c = fsm.AppCommand{Time: now, Payload: []byte("cap:" + sel[rng.IntN(len(sel))] + ":a|" + emitTo(pick(), "b"))}
		}
		cmds = append(cmds, c)
	}
	return cmds
}

func TestPropertyReplicasAndSnapshotsAgree(t *testing.T) {
	cfg := fsm.DefaultConfig()
	cfg.MaxPendingServerRequests = 3
	cfg.MaxCachedResponses = 4
	cfg.MaxUnassigned = 5
	cfg.MaxTombstones = 4
	cfg.MaxSessions = 6
	seeds := 60
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		cmds := genCommands(rng, 400)
		split := rng.IntN(len(cmds) + 1)

		a, b := newHarness(t, cfg), newHarness(t, cfg)
		part := newHarness(t, cfg)
		for i, c := range cmds {
			ra, rb := a.raw(c), b.raw(c)
			if ra.Value != rb.Value || !bytes.Equal(ra.Data, rb.Data) {
				t.Fatalf("seed %d step %d: results differ", seed, i)
			}
			if i < split {
				part.raw(c)
			}
		}
		if a.hash() != b.hash() {
			t.Fatalf("seed %d: replicas diverged", seed)
		}

		var snap bytes.Buffer
		if err := part.m.SaveSnapshot(&snap); err != nil {
			t.Fatal(err)
		}
		c := newHarness(t, cfg)
		if err := c.m.RecoverFromSnapshot(&snap); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for _, cmd := range cmds[split:] {
			c.raw(cmd)
		}
		if a.hash() != c.hash() {
			t.Fatalf("seed %d: snapshot at %d then replay diverged from full replay", seed, split)
		}
		if a.m.Stats() != c.m.Stats() {
			t.Fatalf("seed %d: stats %+v vs %+v", seed, a.m.Stats(), c.m.Stats())
		}
	}
}

// FuzzRecoverFromSnapshot feeds damaged snapshots whose checksum is valid (as
// if written by a buggy binary): restore must fail with an error or succeed,
// never panic, and a failure must leave the state untouched.
func FuzzRecoverFromSnapshot(f *testing.F) {
	h := busyHarness(f)
	var buf bytes.Buffer
	if err := h.m.SaveSnapshot(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes()[:buf.Len()-4])
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) < 5 {
			return
		}
		b := append([]byte("ZFSM\x01"), body[5:]...)
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
		r := newHarness(t, fsm.DefaultConfig())
		r.open(sid(1))
		before := r.m.Stats()
		if err := r.m.RecoverFromSnapshot(bytes.NewReader(b)); err != nil {
			// The application may have restored its part before the
			// machine found trailing damage; the machine's own state must
			// be untouched.
			if _, serr := r.m.Session(sid(1)); serr != nil || r.m.Stats() != before {
				t.Fatalf("failed restore (%v) changed the machine's state", err)
			}
		}
	})
}
