package fsm_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

func directory(t *testing.T, m *fsm.Machine) []fsm.MemberRecord {
	t.Helper()
	v, err := m.Lookup(fsm.MembersQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return v.([]fsm.MemberRecord)
}

func TestSetMembersReplacesTheDirectory(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	ms := []fsm.MemberRecord{{ID: 1, RaftAddr: "r1:1", ClientAddr: "c1:1"}, {ID: 4, RaftAddr: "r4:1", ClientAddr: "c4:1"}}
	if o := h.apply(fsm.SetMembers{Time: h.stamp(time.Millisecond), Members: ms}); o.Status != fsm.StatusOK {
		t.Fatalf("SetMembers: %+v", o)
	}
	if got := directory(t, h.m); !slices.Equal(got, ms) {
		t.Fatalf("directory %+v; want %+v", got, ms)
	}
	bad := map[string][]fsm.MemberRecord{
		"unsorted":   {ms[1], ms[0]},
		"zero id":    {{ID: 0, RaftAddr: "a:1", ClientAddr: "b:1"}},
		"duplicate":  {ms[0], ms[0]},
		"empty addr": {{ID: 2, RaftAddr: "a:1"}},
		"long addr":  {{ID: 2, RaftAddr: strings.Repeat("a", 300), ClientAddr: "b:1"}},
		"too many": func() []fsm.MemberRecord {
			var out []fsm.MemberRecord
			for i := 1; i <= fsm.MaxMembers+1; i++ {
				out = append(out, fsm.MemberRecord{ID: uint64(i), RaftAddr: "a:1", ClientAddr: "b:1"})
			}
			return out
		}(),
	}
	for name, b := range bad {
		if o := h.apply(fsm.SetMembers{Time: h.stamp(time.Millisecond), Members: b}); o.Status != fsm.StatusInvalid {
			t.Errorf("%s: %+v; want StatusInvalid", name, o)
		}
	}
	if got := directory(t, h.m); !slices.Equal(got, ms) {
		t.Fatalf("directory changed by invalid commands: %+v", got)
	}

	// The directory travels in snapshots.
	var buf bytes.Buffer
	if err := h.m.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, fsm.DefaultConfig())
	if err := h2.m.RecoverFromSnapshot(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := directory(t, h2.m); !slices.Equal(got, ms) {
		t.Fatalf("directory after snapshot %+v; want %+v", got, ms)
	}
	if h.hash() != h2.hash() {
		t.Fatal("hash differs after snapshot round trip")
	}
}

// TestSnapshotVersion1StillReads: a snapshot written before the member
// directory existed (version 1: no directory section) restores, with an
// empty directory.
func TestSnapshotVersion1StillReads(t *testing.T) {
	h := newHarness(t, fsm.DefaultConfig())
	var buf bytes.Buffer
	if err := h.m.SaveSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// Empty machine: magic, version, clock, applied, then one zero count
	// each for sessions, the unassigned queue, tombstones and members.
	const membersAt = 4 + 1 + 8 + 8 + 3
	if b[4] != 2 || b[membersAt] != 0 {
		t.Fatalf("unexpected layout: version %d, byte %d", b[4], b[membersAt])
	}
	v1 := append(append([]byte{}, b[:membersAt]...), b[membersAt+1:len(b)-4]...)
	v1[4] = 1
	v1 = binary.BigEndian.AppendUint32(v1, crc32.Checksum(v1, crc32.MakeTable(crc32.Castagnoli)))
	h2 := newHarness(t, fsm.DefaultConfig())
	h2.apply(fsm.SetMembers{Time: h2.stamp(time.Millisecond), Members: []fsm.MemberRecord{{ID: 1, RaftAddr: "a:1", ClientAddr: "b:1"}}})
	if err := h2.m.RecoverFromSnapshot(bytes.NewReader(v1)); err != nil {
		t.Fatalf("version 1 snapshot: %v", err)
	}
	if got := directory(t, h2.m); len(got) != 0 {
		t.Fatalf("directory after a version 1 snapshot: %+v; want empty", got)
	}
}
