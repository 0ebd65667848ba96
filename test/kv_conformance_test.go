package test

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/kv"
)

// kvGolden reads a worked example of docs/kv.md (kv/testdata/golden).
func kvGolden(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "kv", "testdata", "golden", name+".hex"))
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(raw)) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKVDocExamplesOverTheWire sends docs/kv.md's example commands and
// queries, byte for byte, to a real cluster and checks that its answers are
// the document's example results, notifications and error, byte for byte.
func TestKVDocExamplesOverTheWire(t *testing.T) {
	c := startAppCluster(t, nil, kvApp)
	w := dial(t, c.leader(t).ClientAddr())
	w.createSession()
	// Notifications are not redelivered: keep those that arrive while the
	// test waits for answers.
	var notes [][]byte
	keep := func(match func(codec.Message) bool) func(codec.Message) bool {
		return func(m codec.Message) bool {
			if n, ok := m.(*codec.Notification); ok {
				if n.Flags != 0 {
					t.Errorf("notification flags %#x", n.Flags)
				}
				notes = append(notes, n.Payload)
				return false
			}
			return match(m)
		}
	}
	result := func(id uint64, name string) []byte {
		t.Helper()
		w.send(&codec.ClientRequest{RequestID: id, LowestPending: id, Payload: kvGolden(t, name)})
		r, ok := w.next(keep(answers(id))).(*codec.ClientResponse)
		if !ok {
			t.Fatalf("%s (request %d) was not answered with a result", name, id)
		}
		return r.Result
	}
	query := func(id uint64, name string) codec.Message {
		t.Helper()
		w.send(&codec.Query{CorrelationID: id, Payload: kvGolden(t, name)})
		return w.next(keep(func(m codec.Message) bool {
			switch r := m.(type) {
			case *codec.QueryResponse:
				return r.CorrelationID == id
			case *codec.QueryError:
				return r.CorrelationID == id
			}
			return false
		}))
	}
	same := func(what string, got []byte, golden string) {
		t.Helper()
		if want := kvGolden(t, golden); !bytes.Equal(got, want) {
			t.Errorf("%s: server sent\n% x\ndocs/kv.md example %s is\n% x", what, got, golden, want)
		}
	}
	same("watch result", result(1, "Watch"), "WatchResultAbsent")
	result(2, "Set")
	same("second watch result", result(3, "Watch"), "WatchResultValue")
	same("incr result", result(4, "Incr"), "IncrResult")
	same("compare-and-set result", result(5, "CompareAndSet"), "RevisionResult")
	if r, ok := query(1, "Get").(*codec.QueryResponse); !ok {
		t.Fatal("get was refused")
	} else {
		same("get result", r.Result, "GetResult")
	}
	result(6, "Delete")
	if r, ok := query(2, "Stats").(*codec.QueryResponse); !ok {
		t.Fatal("stats was refused")
	} else {
		same("stats result", r.Result, "StatsResult")
	}
	// Deleting again: the example error frame, byte for byte.
	w.send(&codec.ClientRequest{RequestID: 7, LowestPending: 7, Payload: kvGolden(t, "Delete")})
	m := w.next(keep(answers(7)))
	frame, err := codec.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	same("error frame", frame, "ErrorNotFound")
	if r := result(8, "Unwatch"); len(r) != 0 {
		t.Errorf("unwatch result % x, want empty", r)
	}

	// The watch saw set, compare-and-set and delete as Notification frames
	// (not acknowledged): the second and third are the example
	// notifications.
	for len(notes) < 3 {
		notes = append(notes, w.next(kindIs(codec.KindNotification)).(*codec.Notification).Payload)
	}
	same("second notification", notes[1], "NotificationValue")
	same("third notification", notes[2], "NotificationDeleted")

	// kv.md §3 and §7: errors of queries and malformed payloads.
	appErr := func(m codec.Message) (codec.Code, uint32) {
		switch r := m.(type) {
		case *codec.QueryError:
			return r.Reason, r.AppCode
		case *codec.RequestError:
			return r.Reason, r.AppCode
		}
		return 0, 0
	}
	for _, tc := range []struct {
		what string
		m    codec.Message
		code uint32
	}{
		{"get of a missing key", query(3, "Get"), kv.ErrNotFound.AppCode()},
		{"a command sent as a query", query(4, "Set"), kv.ErrMalformed.AppCode()},
	} {
		if reason, code := appErr(tc.m); reason != codec.CodeApplication || code != tc.code {
			t.Errorf("%s: got %+v, want Application with app_code %d", tc.what, tc.m, tc.code)
		}
	}
	for i, payload := range [][]byte{
		kvGolden(t, "Get"),              // a query sent as a command
		{2, byte(kv.OpSet), 1, 'a', 0},  // version 2
		{1, 0x07, 1, 'a'},               // unknown op
		{1, byte(kv.OpDelete), 0x81, 0}, // non-minimal uvarint length
		append(kvGolden(t, "Delete"), 0),
	} {
		id := uint64(9 + i)
		w.send(&codec.ClientRequest{RequestID: id, LowestPending: id, Payload: payload})
		m := w.next(answers(id))
		if reason, code := appErr(m); reason != codec.CodeApplication || code != kv.ErrMalformed.AppCode() {
			t.Errorf("payload % x: got %+v, want Application with app_code %d (Malformed)", payload, m, kv.ErrMalformed.AppCode())
		}
	}
}
