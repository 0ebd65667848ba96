package test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

func dialClient(t *testing.T, c *cluster, opts ...client.Option) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := client.Dial(ctx, c.Endpoints(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestClientKVSetGetWatch(t *testing.T) {
	c := startAppCluster(t, nil, kvApp)
	notes := make(chan client.Notification, 16)
	watcher := dialClient(t, c, client.WithNotificationHandler(func(n client.Notification) { notes <- n }))
	writer := dialClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	if _, err := writer.Submit(ctx, kv.EncodeSet("k", []byte("v1"))); err != nil {
		t.Fatal(err)
	}
	res, err := writer.Query(ctx, kv.EncodeGet("k"))
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := kv.DecodeGetResult(res); err != nil || string(v) != "v1" {
		t.Fatalf("get = %q, %v", v, err)
	}
	_, err = writer.Query(ctx, kv.EncodeGet("missing"))
	var app *client.AppError
	if !errors.As(err, &app) || !errors.Is(kv.ErrorFromCode(app.Code, app.Message), kv.ErrNotFound) {
		t.Fatalf("get missing: %v, want kv.ErrNotFound", err)
	}

	res, err = watcher.Submit(ctx, kv.EncodeWatch("k"))
	if err != nil {
		t.Fatal(err)
	}
	// The watch answers the current value.
	if wr, err := kv.DecodeWatchResult(res); err != nil || !wr.Exists || string(wr.Value) != "v1" {
		t.Fatalf("watch result %+v, %v; want v1", wr, err)
	}
	next := func() kv.Notification {
		t.Helper()
		select {
		case r := <-notes:
			if r.Lost {
				t.Fatal("notifications lost on a quiet connection")
			}
			n, err := kv.DecodeNotification(r.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return n
		case <-ctx.Done():
			t.Fatal("no notification")
		}
		return kv.Notification{}
	}
	if _, err := writer.Submit(ctx, kv.EncodeSet("k", []byte("v2"))); err != nil {
		t.Fatal(err)
	}
	if n := next(); string(n.Value) != "v2" {
		t.Fatalf("notification %+v, want v2", n)
	}
	if _, err := writer.Submit(ctx, kv.EncodeDelete("k")); err != nil {
		t.Fatal(err)
	}
	if n := next(); !n.Deleted {
		t.Fatalf("notification %+v, want a deletion", n)
	}
}

// TestClientCounterExactlyOnceAcrossLeaderTransfers is the exactly-once
// promise end to end: 1,000 increments from 8 goroutines while leadership
// moves twice end at exactly 1,000, and no call fails.
func TestClientCounterExactlyOnceAcrossLeaderTransfers(t *testing.T) {
	c := startAppCluster(t, nil, kvApp)
	conns := make([]*client.Conn, 8)
	for i := range conns {
		conns[i] = dialClient(t, c)
	}
	const total = 1000
	// Leadership moves when 250 and 600 increments have completed; workers
	// wait until each transfer has been requested, so the increments after
	// it run while leadership is moving.
	thresholds := map[int64]bool{250: true, 600: true}
	var completed atomic.Int64
	transferReq := make(chan int64, 2)
	var gate sync.RWMutex
	var transfers sync.WaitGroup
	transferErrs := make(chan error, 2)
	transfers.Add(1)
	go func() {
		defer transfers.Done()
		for range transferReq {
			gate.Unlock() // the transfer is on its way: let the workers go on
			if _, err := tryTransferLeadership(c); err != nil {
				transferErrs <- err
			}
		}
	}()
	work := make(chan struct{}, total)
	for i := 0; i < total; i++ {
		work <- struct{}{}
	}
	close(work)
	errs := make(chan error, total)
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				gate.RLock()
				gate.RUnlock()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := conn.Submit(ctx, kv.EncodeIncr("counter", 1))
				cancel()
				if err != nil {
					errs <- err
				}
				if n := completed.Add(1); thresholds[n] {
					gate.Lock() // hold new increments until the transfer is requested
					transferReq <- n
				}
			}
		}()
	}
	wg.Wait()
	close(transferReq)
	transfers.Wait()
	close(errs)
	close(transferErrs)
	for err := range transferErrs {
		t.Fatal(err)
	}
	for err := range errs {
		t.Errorf("increment failed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res, err := conns[0].Query(ctx, kv.EncodeGet("counter"))
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := kv.DecodeGetResult(res)
	if err != nil || string(v) != "1000" {
		t.Fatalf("counter = %q (%v), want exactly 1000", v, err)
	}
}

func TestClientKeepsSessionAcrossRestartOfItsNode(t *testing.T) {
	c := startAppCluster(t, nil, kvApp)
	conn := dialClient(t, c)
	id := conn.SessionID()
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTimeout)
	defer cancel()
	if _, err := conn.Submit(ctx, kv.EncodeIncr("n", 1)); err != nil {
		t.Fatal(err)
	}
	// The client is connected to the leader; restart that node.
	l := c.leader(t)
	if err := c.Stop(l.ID()); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, l.ID()); err != nil {
		t.Fatal(err)
	}
	res, err := conn.Submit(ctx, kv.EncodeIncr("n", 1))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := kv.DecodeIncrResult(res); err != nil || v != 2 {
		t.Fatalf("incr after restart = %d, %v; want 2", v, err)
	}
	if conn.SessionID() != id {
		t.Fatal("the client created a new session instead of continuing its own")
	}
}
