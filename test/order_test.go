package test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/node"
)

// registerApp is one replica's application: a register whose every write
// (an 8-byte big-endian value) is appended to seen, so the test can read the
// order each replica applied them in.
type registerApp struct {
	mu   sync.Mutex
	seen []uint64
}

func (a *registerApp) Apply(_ *fsm.Context, cmd []byte) ([]byte, error) {
	if len(cmd) != 8 {
		return nil, &fsm.AppError{Code: 1, Message: "want 8 bytes"}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, binary.BigEndian.Uint64(cmd))
	return nil, nil
}

func (a *registerApp) Query([]byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		return nil, nil
	}
	return binary.BigEndian.AppendUint64(nil, a.seen[len(a.seen)-1]), nil
}

func (a *registerApp) SessionOpened(*fsm.Context, fsm.SessionInfo) error { return nil }
func (a *registerApp) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {
}

func (a *registerApp) SaveSnapshot(w io.Writer) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := binary.BigEndian.AppendUint64(nil, uint64(len(a.seen)))
	for _, v := range a.seen {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	_, err := w.Write(b)
	return err
}

func (a *registerApp) RecoverFromSnapshot(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil || len(b) < 8 || uint64(len(b)-8) != 8*binary.BigEndian.Uint64(b) {
		return fmt.Errorf("register snapshot of %d bytes: %v", len(b), err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = a.seen[:0]
	for b = b[8:]; len(b) > 0; b = b[8:] {
		a.seen = append(a.seen, binary.BigEndian.Uint64(b))
	}
	return nil
}

func (a *registerApp) history() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen)
}

// longSessions gives the order tests' sessions a timeout far above the
// harness's 2 s: they test order, and a loaded test machine can keep an
// in-process cluster electing leaders for seconds.
func longSessions(cfg *node.Config) { cfg.SessionTimeout = 30 * time.Second }

// pipeline drives one session the way a pipelining client does: up to
// window requests in flight, each carrying the lowest unanswered id; a
// request refused with a retryable code is resent after the earlier ones
// (in id order), and every unanswered request is resent in id order after a
// reconnect or a second of silence.
type pipeline struct {
	p        *persistent
	n        uint64
	window   uint64
	next     uint64 // next id never sent
	lowest   uint64 // lowest unanswered id
	answered map[uint64]bool
	retry    map[uint64]bool
	pinged   time.Time
}

func (pl *pipeline) send(id uint64) {
	f, err := codec.Encode(&codec.ClientRequest{RequestID: id, LowestPending: pl.lowest, Payload: binary.BigEndian.AppendUint64(nil, id)})
	if err != nil {
		pl.p.t.Fatal(err)
	}
	// A failed send is noticed as silence and handled by a reconnect.
	_ = pl.p.w.conn.Send(f)
}

// reconnect continues the session on the leader. Unlike persistent's, it
// tries again when the node it reached closes the connection before it
// answers (a leader that has just stepped down does).
func (pl *pipeline) reconnect() {
	p := pl.p
	deadline := time.Now().Add(3 * waitTimeout)
	for time.Now().Before(deadline) {
		p.w.close()
		p.w = dial(p.t, p.c.leader(p.t).ClientAddr())
		nonce := secretSeq.Add(1)
		p.w.send(&codec.ContinueSession{SessionID: p.id, Secret: p.secret, Nonce: nonce})
		m, err := p.w.nextWithin(2*time.Second, func(m codec.Message) bool {
			switch r := m.(type) {
			case *codec.SessionContinued:
				return r.Nonce == nonce
			case *codec.SessionRejected:
				return r.Nonce == nonce
			}
			return false
		})
		if err == nil {
			if r, ok := m.(*codec.SessionRejected); ok && (r.Reason == codec.CodeSessionExpired || r.Reason == codec.CodeSessionNotFound) {
				p.t.Fatalf("session lost: %+v", r)
			}
			if _, ok := m.(*codec.SessionContinued); ok {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatal("could not continue the session")
}

func (pl *pipeline) resendAll() {
	for id := pl.lowest; id < pl.next; id++ {
		if !pl.answered[id] {
			pl.send(id)
		}
	}
	clear(pl.retry)
}

// handle takes one message; it reports whether the session must be
// continued on the leader.
func (pl *pipeline) handle(m codec.Message) (reconnect bool) {
	t := pl.p.t
	switch r := m.(type) {
	case *codec.ClientResponse:
		pl.answered[r.RequestID] = true
		delete(pl.retry, r.RequestID)
		for pl.answered[pl.lowest] {
			delete(pl.answered, pl.lowest)
			pl.lowest++
		}
	case *codec.RequestError:
		switch {
		case r.RequestID < pl.lowest || pl.answered[r.RequestID]:
			// A late answer to a resent request that was answered.
		case r.Reason == codec.CodeNotLeader:
			return true
		case r.Reason.Retryable():
			pl.retry[r.RequestID] = true
		default:
			t.Fatalf("request %d failed: %v %s", r.RequestID, r.Reason, r.Message)
		}
	case *codec.SessionClosed:
		if r.Reason == codec.CodeSessionExpired || r.Reason == codec.CodeClientClosed {
			t.Fatalf("session lost: %+v", r)
		}
		return true
	}
	return false
}

func (pl *pipeline) run(progress func(answered uint64)) {
	t := pl.p.t
	deadline := time.Now().Add(6 * waitTimeout)
	for pl.lowest <= pl.n {
		if time.Now().After(deadline) {
			t.Fatalf("stuck: %d of %d answered", pl.lowest-1, pl.n)
		}
		for pl.next <= pl.n && pl.next < pl.lowest+pl.window {
			pl.send(pl.next)
			pl.next++
		}
		if time.Since(pl.pinged) > 200*time.Millisecond {
			f, _ := codec.Encode(&codec.KeepAlive{Timestamp: time.Now().UnixNano()})
			_ = pl.p.w.conn.Send(f)
			pl.pinged = time.Now()
		}
		m, err := pl.p.w.nextWithin(time.Second, nil)
		if err != nil {
			if !errors.Is(err, errNoMessage) {
				t.Fatal(err)
			}
			if !pl.p.alive() {
				pl.reconnect()
			}
			pl.resendAll()
			continue
		}
		reconnect := pl.handle(m)
		for more := true; more && !reconnect; {
			select {
			case m, ok := <-pl.p.w.in:
				if !ok {
					reconnect = true
					break
				}
				reconnect = pl.handle(m)
			default:
				more = false
			}
		}
		if reconnect {
			pl.reconnect()
			pl.resendAll()
		} else if len(pl.retry) > 0 {
			ids := make([]uint64, 0, len(pl.retry))
			for id := range pl.retry {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			for _, id := range ids {
				if !pl.answered[id] && id >= pl.lowest {
					pl.send(id)
				}
			}
			clear(pl.retry)
		}
		progress(pl.lowest - 1)
	}
}

// TestOneSessionsPipelinedWritesApplyInOrderAcrossLeaderChanges is issue
// 8's per-session order test: one session pipelines 1,000 writes of
// increasing values to one register while leadership moves twice. Every
// replica must end at the last value, and each must have applied every
// value once, in request-id order.
func TestOneSessionsPipelinedWritesApplyInOrderAcrossLeaderChanges(t *testing.T) {
	var mu sync.Mutex
	var apps []*registerApp
	c := startAppCluster(t, longSessions, func() fsm.Application {
		mu.Lock()
		defer mu.Unlock()
		a := &registerApp{}
		apps = append(apps, a)
		return a
	})
	const n = 1000
	pl := &pipeline{p: newPersistent(t, c), n: n, window: 128, next: 1, lowest: 1,
		answered: map[uint64]bool{}, retry: map[uint64]bool{}}

	// Leadership moves when 250 and 600 writes are answered, while the
	// pipeline keeps going.
	moves := make(chan struct{}, 2)
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range moves {
			if _, err := tryTransferLeadership(c); err != nil {
				errs <- err
			}
		}
	}()
	var moved int
	pl.run(func(answered uint64) {
		if (moved == 0 && answered >= 250) || (moved == 1 && answered >= 600) {
			moved++
			moves <- struct{}{}
		}
	})
	close(moves)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if moved != 2 {
		t.Fatalf("leadership moved %d times, want 2", moved)
	}

	want := make([]uint64, n)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	mu.Lock()
	replicas := slices.Clone(apps)
	mu.Unlock()
	if len(replicas) != 3 {
		t.Fatalf("%d applications, want 3", len(replicas))
	}
	waitFor(t, "every replica to apply every write", func() bool {
		for _, a := range replicas {
			if len(a.history()) < n {
				return false
			}
		}
		return true
	})
	for i, a := range replicas {
		got := a.history()
		if !slices.Equal(got, want) {
			for j := range got {
				if j >= n || got[j] != want[j] {
					t.Fatalf("replica %d applied %d writes; position %d holds %d, want %d", i+1, len(got), j, got[j], j+1)
				}
			}
			t.Fatalf("replica %d applied %d writes, want %d", i+1, len(got), n)
		}
	}
}

// TestClientGoAppliesInOrderAcrossLeaderChanges is the same promise through
// the client library: 1,000 writes started with Conn.Go without waiting,
// leadership moving twice meanwhile; every call succeeds and every replica
// applies the writes once each, in the order they were started.
func TestClientGoAppliesInOrderAcrossLeaderChanges(t *testing.T) {
	var mu sync.Mutex
	var apps []*registerApp
	c := startAppCluster(t, longSessions, func() fsm.Application {
		mu.Lock()
		defer mu.Unlock()
		a := &registerApp{}
		apps = append(apps, a)
		return a
	})
	conn := dialClient(t, c)
	const n = 1000
	calls := make([]*client.Call, 0, n)
	for i := uint64(1); i <= n; i++ {
		calls = append(calls, conn.Go(binary.BigEndian.AppendUint64(nil, i)))
		if i == 250 || i == 600 {
			// Move leadership while the calls before are still in flight.
			if _, err := tryTransferLeadership(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, cl := range calls {
		select {
		case <-cl.Done:
		case <-time.After(6 * waitTimeout):
			t.Fatalf("call %d never completed", i+1)
		}
		if cl.Error != nil {
			t.Fatalf("call %d: %v", i+1, cl.Error)
		}
	}
	mu.Lock()
	replicas := slices.Clone(apps)
	mu.Unlock()
	want := make([]uint64, n)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	waitFor(t, "every replica to apply every write", func() bool {
		for _, a := range replicas {
			if len(a.history()) < n {
				return false
			}
		}
		return true
	})
	for i, a := range replicas {
		if got := a.history(); !slices.Equal(got, want) {
			for j := range min(len(got), n) {
				if got[j] != want[j] {
					t.Fatalf("replica %d applied %d writes; position %d holds %d, want %d", i+1, len(got), j, got[j], j+1)
				}
			}
			t.Fatalf("replica %d applied %d writes, want %d", i+1, len(got), n)
		}
	}
}
