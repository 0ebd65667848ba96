package ops

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zraft/zraft/admin"
	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/kv"
)

// leaderMember returns the member of ms that leads.
func leaderMember(t *testing.T, a *admin.Client, ms []*member) *member {
	t.Helper()
	id := waitLeader(t, a, ms)
	for _, m := range ms {
		if m.id == id {
			return m
		}
	}
	t.Fatalf("leader %d is not among the members", id)
	return nil
}

// droppedForClusterID reads zraft_peer_dropped_total{reason="cluster_id"}
// from m's /metrics (0 when absent or unreadable).
func droppedForClusterID(m *member) float64 {
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + m.httpAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "zraft_peer_dropped_total{") && strings.Contains(line, `reason="cluster_id"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return 0
}

// TestBackupWhileWritingThenRestoreAfterLosingEveryMember takes a backup
// (admin SnapshotSaveFile, as zraft snapshot save does) while a client
// writes, kills every member with SIGKILL and deletes their data, restores
// a NEW cluster (new ids, addresses and cluster id) from the file with node
// --restore, and checks: every write acknowledged before the backup began
// reads back; the writes present form a prefix of the ones sent (one
// consistent point); a session whose id and secret the application kept
// continues on the restored cluster, its last answer still cached (a
// resend is not applied again); a member started with the OLD cluster id
// and pointed at the new members is refused (its traffic dropped,
// zraft_peer_dropped_total{reason="cluster_id"}), never gets a leader, and
// changes neither the members nor the data. Runbooks: docs/operations.md, "Back up" and "Restore
// after losing a majority".
func TestBackupWhileWritingThenRestoreAfterLosingEveryMember(t *testing.T) {
	// Sessions must outlive the outage: 60 s.
	cfg := map[string]any{"session_timeout": "60s", "snapshot_entries": 200}
	old := newCluster(t, cfg)
	ms, a := startThree(t, old)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// A session whose id and secret the application keeps.
	secret := newSecret(t)
	w := dialWire(t, leaderMember(t, a, ms).clientAddr)
	sid := w.createSession(secret)
	var last int64
	const rawRequests = 5
	for i := uint64(1); i <= rawRequests; i++ {
		last = w.incr(i, "raw")
	}
	w.close()

	// A client sets k0, k1, ... in order; acked counts the acknowledged.
	conn, kc, err := dialSession(ctx, endpoints(ms), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked, sent := 0, 0
	var writeErr error
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			sent = i + 1
			mu.Unlock()
			cctx, ccancel := context.WithTimeout(ctx, callBudget)
			_, err := kc.Set(cctx, fmt.Sprint("k", i), []byte(fmt.Sprint("v", i)))
			ccancel()
			mu.Lock()
			if err != nil {
				writeErr = err
				mu.Unlock()
				return
			}
			acked = i + 1
			mu.Unlock()
		}
	}()
	waitFor(t, 30*time.Second, "50 acknowledged writes", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return acked >= 50, fmt.Sprint(acked, " acknowledged, error ", writeErr)
	})
	mu.Lock()
	before := acked
	mu.Unlock()
	file := filepath.Join(t.TempDir(), "backup.tar")
	info, err := a.SnapshotSaveFile(ctx, file)
	if err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
	mu.Lock()
	during := acked
	mu.Unlock()
	close(stop)
	<-writerDone
	kc.Close()
	conn.Close()
	mu.Lock()
	total := sent
	if writeErr != nil {
		t.Fatalf("write failed while the backup was taken: %v", writeErr)
	}
	mu.Unlock()
	t.Logf("backup of %d bytes (%d files) from %s; %d writes acknowledged before it began, %d when it was saved",
		info.Bytes, info.Files, info.From, before, during)

	// Lose every member for good.
	for _, m := range ms {
		old.kill(m)
		if err := os.RemoveAll(m.dir); err != nil {
			t.Fatal(err)
		}
	}

	// Restore a new cluster: new ids, addresses, data dirs and cluster id.
	nc := newCluster(t, cfg)
	if nc.clusterID == old.clusterID {
		t.Fatal("the new cluster got the old cluster's id")
	}
	rs := []*member{nc.newMember(11), nc.newMember(12), nc.newMember(13)}
	for _, m := range rs {
		nc.start(m, rs, "--restore", file)
	}
	ra := nc.admin(rs)
	rl := leaderMember(t, ra, rs)
	waitFor(t, 15*time.Second, "the restored cluster's directory lists 11, 12, 13", func() (bool, string) {
		ids := memberIDs(t, ra)
		return slices.Equal(ids, []uint64{11, 12, 13}), fmt.Sprint(ids)
	})

	// Every write acknowledged before the backup is there; the writes
	// present are a prefix of those sent.
	conn2, kc2, err := dialSession(ctx, endpoints(rs), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	defer kc2.Close()
	present := 0
	for i := 0; i < total; i++ {
		v, err := kc2.Get(ctx, fmt.Sprint("k", i))
		switch {
		case errors.Is(err, kv.ErrNotFound):
			if i < before {
				t.Fatalf("k%d, acknowledged before the backup, is missing from the restored cluster", i)
			}
		case err != nil:
			t.Fatalf("get k%d: %v", i, err)
		case string(v.Value) != fmt.Sprint("v", i):
			t.Fatalf("k%d = %q; want v%d", i, v.Value, i)
		default:
			if present != i {
				t.Fatalf("k%d is restored but k%d is not: not one consistent point", i, present)
			}
			present++
		}
	}
	t.Logf("restored: %d of %d writes sent (%d acknowledged before the backup)", present, total, before)

	// The kept session continues on the restored cluster.
	w2 := dialWire(t, rl.clientAddr)
	if m, ok := w2.continueSession(sid, secret).(*codec.SessionContinued); !ok {
		t.Fatalf("continue the kept session on the restored cluster: %+v", m)
	}
	if again := w2.incr(rawRequests, "raw"); again != last {
		t.Fatalf("resent request %d answered %d; want its cached answer %d (applied twice)", rawRequests, again, last)
	}
	if next := w2.incr(rawRequests+1, "raw"); next != last+1 {
		t.Fatalf("a new request on the kept session answered %d; want %d", next, last+1)
	}
	w2.close()

	// A member of the OLD cluster pointed at the new members is refused.
	var base float64
	for _, m := range rs {
		base += droppedForClusterID(m)
	}
	stray := old.newMember(1)
	old.start(stray, append([]*member{stray}, rs...))
	sa := old.admin([]*member{stray})
	waitFor(t, 30*time.Second, "the new members dropping the old cluster's traffic", func() (bool, string) {
		var n float64
		for _, m := range rs {
			n += droppedForClusterID(m)
		}
		return n > base, fmt.Sprintf("%v dropped (cluster_id), %v before", n, base)
	})
	// It never sees a leader while its elections go nowhere.
	for range 5 {
		sts, _ := sa.Status(ctx)
		if len(sts) == 1 && sts[0].Err == nil && sts[0].LeaderID != 0 {
			t.Fatalf("the old cluster's member sees leader %d", sts[0].LeaderID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	old.stop(stray)
	if ids := memberIDs(t, ra); !slices.Equal(ids, []uint64{11, 12, 13}) {
		t.Fatalf("the restored cluster's members are %v after the old member ran", ids)
	}
	if v, err := kc2.Get(ctx, "raw"); err != nil || string(v.Value) != fmt.Sprint(last+1) {
		t.Fatalf("raw = %q %v after the old member ran; want %d", v.Value, err, last+1)
	}
	nc.checkAlive()
}
