package kv_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
)

// BenchmarkApplySet measures one kv set through the session layer: decoding
// the log entry, deduplication and watermark bookkeeping, the store's update
// and caching the result. 1,000 distinct keys, 64-byte values, one session
// that keeps a single request in flight.
func BenchmarkApplySet(b *testing.B) {
	c := newCluster(b, kv.DefaultConfig(), fsm.DefaultConfig())
	a := sid(1)
	c.open(a)
	payloads := make([][]byte, 1000)
	for i := range payloads {
		payloads[i] = kv.EncodeSet(fmt.Sprintf("key-%04d", i), make([]byte, 64))
	}
	buf := make([]byte, 0, 256)
	now := c.now
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uint64(i + 1)
		now = now.Add(time.Microsecond)
		buf = fsm.EncodeCommand(buf[:0], fsm.ClientRequest{Time: now, Session: a, RequestID: id, LowestPending: id,
			Payload: payloads[i%len(payloads)]})
		r, err := c.m.Apply(buf)
		if err != nil || r.Value != uint64(fsm.StatusOK) {
			b.Fatalf("apply: %v %v", r, err)
		}
	}
}
