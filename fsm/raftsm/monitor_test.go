package raftsm_test

import (
	"errors"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/fsm/raftsm"
	"github.com/zraft/zraft/kv"
)

type recorder struct {
	checkpoints [][2]uint64
	reports     [][3]uint64
	undecodable []uint64
}

func (r *recorder) Checkpoint(index, hash uint64) {
	r.checkpoints = append(r.checkpoints, [2]uint64{index, hash})
}
func (r *recorder) Report(index, hash, reporter uint64) {
	r.reports = append(r.reports, [3]uint64{index, hash, reporter})
}
func (r *recorder) Undecodable(index uint64, err error) {
	if !errors.Is(err, fsm.ErrUnknownVersion) {
		panic(err)
	}
	r.undecodable = append(r.undecodable, index)
}

func newWrapped(t *testing.T, opts raftsm.Options) *raftsm.StateMachine {
	t.Helper()
	store, err := kv.New(kv.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	m, err := fsm.New(store, fsm.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return raftsm.NewWith(m, opts)
}

func set(key string) []byte {
	return fsm.EncodeCommand(nil, fsm.AppCommand{Time: 1, Payload: kv.EncodeSet(key, []byte("v"))})
}

// An entry the fsm cannot decode (a newer version, or forged) used to be
// returned to dragonboat as an error, which stops the replica again on every
// restart. It is now skipped with an Invalid result and reported.
func TestUndecodableEntryIsSkippedNotFatal(t *testing.T) {
	rec := &recorder{}
	s := newWrapped(t, raftsm.Options{Monitor: rec})
	before, _ := s.GetHash()
	r, err := s.Update(sm.Entry{Index: 7, Cmd: []byte{fsm.CommandVersion + 1, 1, 2, 3}})
	if err != nil || r.Value != uint64(fsm.StatusInvalid) {
		t.Fatalf("undecodable entry: %+v, %v", r, err)
	}
	after, _ := s.GetHash()
	if before != after || len(rec.undecodable) != 1 || rec.undecodable[0] != 7 {
		t.Fatalf("state changed (%x -> %x) or not reported: %v", before, after, rec.undecodable)
	}
	if _, err := s.Update(sm.Entry{Index: 8, Cmd: set("a")}); err != nil {
		t.Fatalf("the replica does not carry on: %v", err)
	}
}

// Checkpoints fall on the first entry of each run of HashEvery indexes, so
// replicas that apply the same log hash at the same indexes; a replica that
// restarts mid-run skips only that run. Hash reports reach the monitor and
// not the state.
func TestCheckpointsAndHashReports(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	sa := newWrapped(t, raftsm.Options{HashEvery: 4, Monitor: a})
	sb := newWrapped(t, raftsm.Options{HashEvery: 4, Monitor: b})
	for i := uint64(1); i <= 13; i++ {
		if i == 6 || i == 7 {
			continue // indexes of entries dragonboat does not pass on (no-ops)
		}
		for _, s := range []*raftsm.StateMachine{sa, sb} {
			if _, err := s.Update(sm.Entry{Index: i, Cmd: set("k")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []uint64{4, 8, 12}
	if len(a.checkpoints) != len(want) {
		t.Fatalf("checkpoints %v, want at %v", a.checkpoints, want)
	}
	for i, c := range a.checkpoints {
		if c[0] != want[i] || c != b.checkpoints[i] {
			t.Fatalf("checkpoint %d: %v and %v, want equal at index %d", i, c, b.checkpoints[i], want[i])
		}
	}
	h, _ := sa.GetHash()
	if _, err := sa.Update(sm.Entry{Index: 14, Cmd: raftsm.EncodeHashReport(12, 99, 3)}); err != nil {
		t.Fatal(err)
	}
	if h2, _ := sa.GetHash(); h2 != h || len(a.reports) != 1 || a.reports[0] != [3]uint64{12, 99, 3} {
		t.Fatalf("report: state %x -> %x, reports %v", h, h2, a.reports)
	}
}
