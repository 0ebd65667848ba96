package bench

import (
	"bytes"
	"errors"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

func TestBaselineStateMachine(t *testing.T) {
	s := newBaselineSM()
	for i, kv := range [][2]string{{"a", "1"}, {"b", ""}, {"a", "3"}} {
		res, err := s.Update(sm.Entry{Cmd: encodeBaselineSet(kv[0], []byte(kv[1]))})
		if err != nil {
			t.Fatal(err)
		}
		if want := []uint64{1, 2, 2}[i]; res.Value != want {
			t.Errorf("update %d: %d keys, want %d", i, res.Value, want)
		}
	}
	if _, err := s.Update(sm.Entry{Cmd: []byte{0, 9, 'x'}}); !errors.Is(err, errBaselineCommand) {
		t.Errorf("short command: %v", err)
	}
	if v, err := s.Lookup("a"); err != nil || string(v.([]byte)) != "3" {
		t.Errorf("lookup a = %v, %v", v, err)
	}
	if _, err := s.Lookup("zz"); !errors.Is(err, errBaselineNotFound) {
		t.Errorf("lookup of a missing key: %v", err)
	}

	var snap bytes.Buffer
	if err := s.SaveSnapshot(&snap, nil, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	r := newBaselineSM()
	if err := r.RecoverFromSnapshot(bytes.NewReader(snap.Bytes()), nil, make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	if len(r.data) != 2 || string(r.data["a"]) != "3" || r.data["b"] == nil || len(r.data["b"]) != 0 {
		t.Errorf("recovered %q", r.data)
	}
	if err := r.RecoverFromSnapshot(bytes.NewReader(snap.Bytes()[:snap.Len()-1]), nil, make(chan struct{})); err == nil {
		t.Errorf("truncated snapshot recovered")
	}
	stopped := make(chan struct{})
	close(stopped)
	if err := s.SaveSnapshot(&snap, nil, stopped); !errors.Is(err, sm.ErrSnapshotStopped) {
		t.Errorf("snapshot while stopping: %v", err)
	}
}
