package test

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/node"
)

// writers runs n persistent sessions that each send increments until
// stopped, and records every acknowledged counter value.
type writers struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	acks []uint64
	sess []*persistent
}

func startWriters(t *testing.T, c *cluster, n int) *writers {
	w := &writers{stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		p := newPersistent(t, c)
		w.sess = append(w.sess, p)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for id := uint64(1); id <= 100000; id++ {
				select {
				case <-w.stop:
					return
				default:
				}
				m := p.do(id, id, "incr")
				r, ok := m.(*codec.ClientResponse)
				if !ok || len(r.Result) != 8 {
					t.Errorf("session %d request %d: %+v", i, id, m)
					return
				}
				w.mu.Lock()
				w.acks = append(w.acks, binary.BigEndian.Uint64(r.Result))
				w.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return w
}

func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// waitMore waits until n more writes are acknowledged.
func (w *writers) waitMore(t *testing.T, n int) {
	t.Helper()
	want := w.count() + n
	deadline := time.Now().Add(3 * waitTimeout)
	for w.count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("writes stalled at %d acknowledgements (want %d)", w.count(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish stops the writers and checks that every acknowledged value is
// distinct and that the counter equals their number: nothing applied
// twice, nothing acknowledged lost.
func (w *writers) finish(t *testing.T, c *cluster) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	for _, p := range w.sess {
		p.w.close()
	}
	acks := slices.Clone(w.acks)
	slices.Sort(acks)
	if len(slices.Compact(acks)) != len(w.acks) {
		t.Fatalf("duplicate counter values acknowledged")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	v, err := c.leader(t).Read(ctx, []byte{})
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint64(v.([]byte)); got != uint64(len(w.acks)) {
		t.Fatalf("counter is %d after %d acknowledged increments", got, len(w.acks))
	}
}

func newMember(t *testing.T, id uint64) node.Member {
	t.Helper()
	ms, err := node.LocalMembers(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ms[0].ID = id
	return ms[0]
}

// waitCaughtUp waits until member id has applied as far as the leader.
func waitCaughtUp(t *testing.T, c *cluster, id uint64) {
	t.Helper()
	deadline := time.Now().Add(3 * waitTimeout)
	for time.Now().Before(deadline) {
		n := c.Node(id)
		if n != nil && n.Status().Applied > 0 && n.Status().Applied+50 >= c.leader(t).Status().Applied {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("member %d did not catch up", id)
}

// sessionMembers opens a session on addr and returns the members its
// SessionCreated lists.
func sessionMembers(t *testing.T, addr string) []uint64 {
	w := dial(t, addr)
	defer w.close()
	created, _ := w.createSession()
	var ids []uint64
	for _, m := range created.Members {
		ids = append(ids, m.ID)
	}
	return ids
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGrowTo5AndShrinkTo3WhileWriting grows a 3-member cluster to 5 and
// back to 3 while 8 sessions keep writing: nothing lost or duplicated, no
// session lost, new members catch up (by snapshot: the log is compacted
// every 50 entries), appear in SessionCreated's member list, and serve
// clients as leader; removing the leader moves leadership first.
func TestGrowTo5AndShrinkTo3WhileWriting(t *testing.T) {
	c := startCluster(t, func(cfg *node.Config) { cfg.SnapshotEntries = 50 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := startWriters(t, c, 8)
	w.waitMore(t, 100)

	for _, id := range []uint64{4, 5} {
		m := newMember(t, id)
		if err := c.leader(t).AddMember(ctx, m); err != nil {
			t.Fatalf("add %d: %v", id, err)
		}
		if err := c.Join(ctx, m); err != nil {
			t.Fatalf("start %d: %v", id, err)
		}
		waitCaughtUp(t, c, id)
		w.waitMore(t, 50)
	}
	eventually(t, "new members missing from SessionCreated's member list", func() bool {
		return slices.Equal(sessionMembers(t, c.leader(t).ClientAddr()), []uint64{1, 2, 3, 4, 5})
	})
	// Refused: an id in use, a change on a member that does not lead.
	l := c.leader(t)
	if err := l.AddMember(ctx, newMember(t, 4)); !errors.Is(err, node.ErrMembership) {
		t.Errorf("adding id 4 twice: %v; want ErrMembership", err)
	}
	for _, n := range c.Nodes() {
		if n.ID() != l.ID() {
			if err := n.RemoveMember(ctx, 2); !errors.Is(err, node.ErrMembership) || !errors.Is(err, node.ErrNotLeaderForChange) {
				t.Errorf("remove on a follower: %v; want ErrMembership and ErrNotLeaderForChange", err)
			}
			break
		}
	}
	// A new member serves clients as leader.
	if res, err := l.MoveLeader(ctx, 5, 10*time.Second); err != nil || !res.Moved {
		t.Fatalf("move leader to 5: %+v %v", res, err)
	}
	w.waitMore(t, 50)

	// Shrink: remove the leader (5) and 4.
	for _, id := range []uint64{5, 4} {
		if err := c.Node(id).RemoveMember(ctx, id); id == 5 && err != nil {
			t.Fatalf("remove leader 5 on itself: %v", err)
		}
		if id == 4 {
			if err := c.leader(t).RemoveMember(ctx, 4); err != nil {
				t.Fatalf("remove 4: %v", err)
			}
		}
		if err := c.Stop(id); err != nil {
			t.Logf("stop %d: %v", id, err)
		}
		w.waitMore(t, 50)
	}
	eventually(t, "removed members still in SessionCreated's member list", func() bool {
		return slices.Equal(sessionMembers(t, c.leader(t).ClientAddr()), []uint64{1, 2, 3})
	})
	w.finish(t, c)
}

// TestReplaceDeadMember kills a member for good and replaces it with a new
// one on an empty data dir; the last member cannot be removed.
func TestReplaceDeadMember(t *testing.T) {
	c := startCluster(t, func(cfg *node.Config) { cfg.SnapshotEntries = 50 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := startWriters(t, c, 2)
	w.waitMore(t, 60)
	dead := c.follower(t).ID()
	if err := c.Stop(dead); err != nil {
		t.Logf("stop %d: %v", dead, err)
	}
	if err := c.leader(t).RemoveMember(ctx, dead); err != nil {
		t.Fatalf("remove dead member %d: %v", dead, err)
	}
	m := newMember(t, 7)
	if err := c.leader(t).AddMember(ctx, m); err != nil {
		t.Fatalf("add replacement: %v", err)
	}
	if err := c.Join(ctx, m); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, c, 7)
	if err := c.leader(t).AddMember(ctx, node.Member{ID: dead, RaftAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2"}); !errors.Is(err, node.ErrMembership) {
		t.Errorf("re-adding removed id %d: %v; want ErrMembership", dead, err)
	}
	w.waitMore(t, 30)
	w.finish(t, c)
	want := []uint64{}
	for _, id := range []uint64{1, 2, 3, 7} {
		if id != dead {
			want = append(want, id)
		}
	}
	eventually(t, "replacement missing from the member list", func() bool {
		return slices.Equal(sessionMembers(t, c.leader(t).ClientAddr()), want)
	})
}
