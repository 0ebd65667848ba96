package client

import (
	"context"
	"testing"
)

// BenchmarkSubmit measures one client's round trip through the library, the
// transport and an echoing fake server on loopback.
func BenchmarkSubmit(b *testing.B) {
	srv := newFakeServer(b)
	c := dialT(b, []string{srv.addr()})
	srv.quiet.Store(true) // nobody reads the record
	ctx := context.Background()
	payload := []byte("set a=1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Submit(ctx, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubmitParallel measures throughput with many concurrent callers
// sharing one Conn.
func BenchmarkSubmitParallel(b *testing.B) {
	srv := newFakeServer(b)
	c := dialT(b, []string{srv.addr()})
	srv.quiet.Store(true) // nobody reads the record
	ctx := context.Background()
	payload := []byte("set a=1")
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Submit(ctx, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
