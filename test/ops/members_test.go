package ops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zraft/zraft/admin"
	"github.com/zraft/zraft/client"
)

// startThree starts members 1-3 of c and waits for a leader.
func startThree(t *testing.T, c *cluster) ([]*member, *admin.Client) {
	t.Helper()
	ms := []*member{c.newMember(1), c.newMember(2), c.newMember(3)}
	for _, m := range ms {
		c.start(m, ms)
	}
	a := c.admin(ms)
	waitLeader(t, a, ms)
	return ms, a
}

// grow adds member id through the admin API, starts it with node --join on
// an empty data dir and waits until it has caught up. It returns the new
// member list and an admin client for it.
func grow(t *testing.T, c *cluster, a *admin.Client, current []*member, id uint64) (*member, []*member, *admin.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := c.newMember(id)
	if err := a.MemberAdd(ctx, admin.Member{ID: id, RaftAddr: m.raftAddr, ClientAddr: m.clientAddr}); err != nil {
		t.Fatalf("member add %d: %v", id, err)
	}
	next := append(slices.Clone(current), m)
	// --members: how to reach the cluster (its members) and this member.
	c.start(m, next, "--join")
	na := c.admin(next)
	waitCaughtUp(t, na, id)
	return m, next, na
}

// sessionMembers dials a new session on endpoints and returns the member
// ids its SessionCreated listed, and the endpoint it ended up connected to.
func sessionMembers(t *testing.T, endpoints []string) ([]uint64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	connected := ""
	conn, kc, err := dialSession(ctx, endpoints, func(ev client.Event) {
		if ev.Type == client.EventConnected {
			mu.Lock()
			connected = ev.Endpoint
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("dial %v: %v", endpoints, err)
	}
	defer conn.Close()
	defer kc.Close()
	// The session serves: a write and a linearizable read.
	if _, err := kc.Set(ctx, "probe", []byte(strings.Join(endpoints, ","))); err != nil {
		t.Fatalf("set through %v: %v", endpoints, err)
	}
	if v, err := kc.Get(ctx, "probe"); err != nil || string(v.Value) != strings.Join(endpoints, ",") {
		t.Fatalf("get through %v: %q %v", endpoints, v.Value, err)
	}
	var ids []uint64
	for _, m := range conn.Members() {
		ids = append(ids, m.ID)
	}
	mu.Lock()
	defer mu.Unlock()
	return ids, connected
}

// TestGrowTo5AndShrinkTo3WhileWorking grows a running 3-member cluster of
// cmd/node processes to 5 (admin MemberAdd + node --join on empty data
// dirs; they catch up by snapshot, the log being compacted every 50
// entries) and shrinks it back to 3 (removing the leader first, which hands
// leadership over), while 8 Go client sessions keep incrementing their
// counters and watching each other's. Nothing is lost or applied twice, no
// session is lost, every change is watched; the new members appear in the
// member directory and in SessionCreated's member list; a client that
// knows only a new member is served, and a client that knows only an old
// member is sent to the new leader by its hint. Refused: adding an id in
// use. Runbook: docs/operations.md, "Grow from 3 to 5 members".
func TestGrowTo5AndShrinkTo3WhileWorking(t *testing.T) {
	c := newCluster(t, map[string]any{"snapshot_entries": 50})
	ms, a := startThree(t, c)
	w := startWorkload(t, endpoints(ms), 8)
	writes := 100
	rounds := 1
	if *flagLong {
		writes, rounds = 1000, 3
	}
	w.waitMore(writes)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	nextID := uint64(4)
	for round := 0; round < rounds; round++ {
		current, ca := ms, a
		var added []*member
		for range 2 {
			var m *member
			m, current, ca = grow(t, c, ca, current, nextID)
			added = append(added, m)
			nextID++
			w.waitMore(writes / 2)
		}
		want := []uint64{1, 2, 3, added[0].id, added[1].id}
		waitFor(t, 10*time.Second, "5 members in the directory", func() (bool, string) {
			ids := memberIDs(t, ca)
			return slices.Equal(ids, want), fmt.Sprint(ids)
		})
		// Refused: an id in use (nothing changes).
		err := ca.MemberAdd(ctx, admin.Member{ID: added[0].id, RaftAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2"})
		var ae *admin.Error
		if !errors.Is(err, admin.ErrRefused) || !errors.As(err, &ae) || !strings.Contains(ae.Message, "already in use") {
			t.Fatalf("adding id %d twice: %v; want ErrRefused saying the id is in use", added[0].id, err)
		}
		// A client that knows only a new member is served, and learns
		// every member from SessionCreated.
		ids, _ := sessionMembers(t, []string{added[0].clientAddr})
		if !slices.Equal(ids, want) {
			t.Fatalf("SessionCreated through new member %d lists %v; want %v", added[0].id, ids, want)
		}
		// Move leadership to the newest member; a client that knows only
		// member 1 follows the hint to it.
		last := added[1]
		if res, err := ca.TransferLeader(ctx, last.id, 20*time.Second); err != nil || res.LeaderID != last.id {
			t.Fatalf("leader transfer to %d: %+v %v", last.id, res, err)
		}
		if _, at := sessionMembers(t, []string{ms[0].clientAddr}); at != last.clientAddr {
			t.Fatalf("a client dialing member 1 ended up at %q; want the leader %d at %s (from the hint)", at, last.id, last.clientAddr)
		}
		w.waitMore(writes / 2) // the sessions followed the leader to it

		// Shrink: remove the leader (it hands over first), then the other.
		for _, m := range []*member{last, added[0]} {
			if err := ca.MemberRemove(ctx, m.id); err != nil {
				t.Fatalf("member remove %d: %v", m.id, err)
			}
			c.stop(m)
			w.waitMore(writes / 2)
		}
		a = c.admin(ms)
		waitFor(t, 10*time.Second, "3 members in the directory", func() (bool, string) {
			ids := memberIDs(t, a)
			return slices.Equal(ids, []uint64{1, 2, 3}), fmt.Sprint(ids)
		})
		if ids, _ := sessionMembers(t, endpoints(ms)); !slices.Equal(ids, []uint64{1, 2, 3}) {
			t.Fatalf("SessionCreated after shrinking lists %v; want [1 2 3]", ids)
		}
		c.checkAlive()
	}
	w.finish()
	c.checkAlive()
}

// TestReplaceMemberKilledForGood kills a follower with SIGKILL, deletes its
// data for good, removes it and adds a new member (a new id on an empty
// data dir) while 4 sessions write and watch. The cluster keeps serving on
// two members; the replacement catches up, leads after a transfer, and
// serves a client that knows only it; the dead id cannot come back.
// Runbook: docs/operations.md, "Replace a dead member".
func TestReplaceMemberKilledForGood(t *testing.T) {
	c := newCluster(t, map[string]any{"snapshot_entries": 50})
	ms, a := startThree(t, c)
	w := startWorkload(t, endpoints(ms), 4)
	w.waitMore(100)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	l, err := a.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var dead *member
	var live []*member
	for _, m := range ms {
		if m.id != l.ID && dead == nil {
			dead = m
		} else {
			live = append(live, m)
		}
	}
	c.kill(dead)
	if err := os.RemoveAll(dead.dir); err != nil {
		t.Fatal(err)
	}
	w.waitMore(50) // two of three serve
	if err := a.MemberRemove(ctx, dead.id); err != nil {
		t.Fatalf("remove dead member %d: %v", dead.id, err)
	}
	la := c.admin(live)
	if err := la.MemberAdd(ctx, admin.Member{ID: dead.id, RaftAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2"}); !errors.Is(err, admin.ErrRefused) {
		t.Fatalf("re-adding removed id %d: %v; want ErrRefused", dead.id, err)
	}
	repl, _, ra := grow(t, c, la, live, 7)
	w.waitMore(50)
	want := []uint64{live[0].id, live[1].id, 7}
	slices.Sort(want)
	waitFor(t, 10*time.Second, "the replacement in the directory", func() (bool, string) {
		ids := memberIDs(t, ra)
		return slices.Equal(ids, want), fmt.Sprint(ids)
	})
	if res, err := ra.TransferLeader(ctx, 7, 20*time.Second); err != nil || res.LeaderID != 7 {
		t.Fatalf("leader transfer to the replacement: %+v %v", res, err)
	}
	w.waitMore(50)
	if ids, at := sessionMembers(t, []string{repl.clientAddr}); !slices.Equal(ids, want) || at != repl.clientAddr {
		t.Fatalf("a session through the replacement lists %v at %s; want %v at %s", ids, at, want, repl.clientAddr)
	}
	w.finish()
	c.checkAlive()
}
