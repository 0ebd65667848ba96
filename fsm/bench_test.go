package fsm_test

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
)

// hundredK builds a machine with 100,000 sessions, each with one capability,
// one cached response and one pending server request: a busy node's shape.
func hundredK(b *testing.B) *harness {
	b.Helper()
	h := newHarness(b, fsm.DefaultConfig())
	for i := range 100_000 {
		var id fsm.SessionID
		binary.BigEndian.PutUint64(id[:8], uint64(i)*0x9E3779B97F4A7C15+1)
		binary.BigEndian.PutUint64(id[8:], uint64(i))
		h.raw(fsm.OpenSession{Time: h.stamp(time.Microsecond), ID: id, SecretHash: fsm.SecretHash(append(id[:], id[:]...)),
			Nonce: uint64(i), Capabilities: []fsm.Capability{worker()}, Timeout: 10 * time.Second})
		h.raw(fsm.ClientRequest{Time: h.stamp(time.Microsecond), Session: id, RequestID: 1, LowestPending: 1,
			Payload: []byte("echo:x|" + emitTo(id, "notification"))})
	}
	return h
}

// BenchmarkSnapshot100kSessions reports the time and size of saving and
// restoring the state of 100,000 sessions, and their heap footprint.
func BenchmarkSnapshot100kSessions(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h := hundredK(b)
	runtime.GC()
	runtime.ReadMemStats(&after)
	heapPerSession := float64(after.HeapAlloc-before.HeapAlloc) / 100_000

	var snap bytes.Buffer
	if err := h.m.SaveSnapshot(&snap); err != nil {
		b.Fatal(err)
	}
	b.Run("Save", func(b *testing.B) {
		var buf bytes.Buffer
		buf.Grow(snap.Len())
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			buf.Reset()
			if err := h.m.SaveSnapshot(&buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(snap.Len()), "snapshot-bytes")
		b.ReportMetric(heapPerSession, "heap-bytes/session")
	})
	b.Run("Restore", func(b *testing.B) {
		r := newHarness(b, fsm.DefaultConfig())
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := r.m.RecoverFromSnapshot(bytes.NewReader(snap.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
		if r.m.Stats().Sessions != 100_000 {
			b.Fatal("restore lost sessions")
		}
	})
}

// BenchmarkEmitToSelector measures placing selector-addressed work among
// 1,000 capable sessions, acknowledging as it goes so that queues stay short.
func BenchmarkEmitToSelector(b *testing.B) {
	h := newHarness(b, fsm.DefaultConfig())
	ids := make([]fsm.SessionID, 1000)
	for i := range ids {
		binary.BigEndian.PutUint64(ids[i][8:], uint64(i+1))
		h.raw(fsm.OpenSession{Time: h.stamp(time.Microsecond), ID: ids[i], SecretHash: fsm.SecretHash(append(ids[i][:], ids[i][:]...)),
			Nonce: uint64(i), Capabilities: []fsm.Capability{worker()}, Timeout: 10 * time.Second})
	}
	emit := fsm.EncodeCommand(nil, fsm.AppCommand{Time: h.now, Payload: []byte("cap:role=worker:job")})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.m.Apply(emit); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			b.StopTimer()
			acks := make([]fsm.Ack, len(ids))
			for j, id := range ids {
				acks[j] = fsm.Ack{Session: id, UpTo: ^uint64(0)}
			}
			h.raw(fsm.AckServerRequests{Time: h.now, Acks: acks})
			b.StartTimer()
		}
	}
}
