package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/internal/testnet"
	"github.com/zraft/zraft/node"
	"github.com/zraft/zraft/node/httpapi"
)

const testAdminToken = "test-admin-token-7f3a"

// withAdminHTTP gives the cluster HTTP endpoints and an admin token.
func withAdminHTTP(t *testing.T) func(*node.Config) {
	base := testnet.ConsecutivePorts(t, 3)
	return func(c *node.Config) {
		c.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", base)
		c.AdminToken = testAdminToken
	}
}

// admin POSTs to an admin path with the given token ("" for none).
func admin(t *testing.T, httpAddr, path, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+httpAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	return resp.StatusCode, body
}

// TestAdminCallsNeedTheCredential: every admin endpoint refuses a request
// without the bearer token or with a wrong one, and a node without an
// admin_token refuses them all; /metrics and /healthz stay open.
func TestAdminCallsNeedTheCredential(t *testing.T) {
	c := startCluster(t, withAdminHTTP(t))
	l := c.leader(t)
	target := c.follower(t).ID()
	for _, path := range []string{fmt.Sprintf("/admin/leader/transfer?id=%d", target), "/admin/snapshot"} {
		for _, tok := range []string{"", "wrong-token"} {
			if code, body := admin(t, l.HTTPAddr(), path, tok); code != http.StatusUnauthorized {
				t.Errorf("POST %s with token %q: %d %s; want 401", path, tok, code, body)
			}
		}
	}
	if id, _, _ := l.Leader(); id != l.ID() {
		t.Fatalf("leadership moved to %d after refused transfers", id)
	}
	for _, p := range []string{"/metrics", "/healthz"} {
		resp, err := http.Get("http://" + l.HTTPAddr() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d; want it open", p, resp.StatusCode)
		}
	}
	http.DefaultClient.CloseIdleConnections()

	// A node without a token serves no admin endpoint at all.
	c2 := startCluster(t, func(cfg *node.Config) { withAdminHTTP(t)(cfg); cfg.AdminToken = "" })
	l2 := c2.leader(t)
	if code, body := admin(t, l2.HTTPAddr(), "/admin/snapshot", "anything"); code != http.StatusForbidden {
		t.Errorf("admin without admin_token configured: %d %s; want 403", code, body)
	}
}

// TestLeaderTransfer moves leadership with the admin endpoint, asked on a
// member that does not lead, and refuses a target that is not a member.
func TestLeaderTransfer(t *testing.T) {
	c := startCluster(t, withAdminHTTP(t))
	old := c.leader(t)
	var asked, target *node.Node
	for _, n := range c.Nodes() {
		if n.ID() != old.ID() {
			if asked == nil {
				asked = n
			} else {
				target = n
			}
		}
	}
	code, body := admin(t, asked.HTTPAddr(), fmt.Sprintf("/admin/leader/transfer?id=%d&wait=10s", target.ID()), testAdminToken)
	if code != http.StatusOK {
		t.Fatalf("transfer: %d %s", code, body)
	}
	var res httpapi.TransferResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Moved || res.LeaderID != target.ID() {
		t.Fatalf("transfer answered %+v; want moved to %d", res, target.ID())
	}
	if !target.IsLeader() {
		t.Fatalf("member %d does not lead after a successful transfer", target.ID())
	}
	if code, body := admin(t, asked.HTTPAddr(), "/admin/leader/transfer?id=99", testAdminToken); code != http.StatusBadRequest ||
		!strings.Contains(string(body), "not a voting member") {
		t.Errorf("transfer to a non-member: %d %s; want 400 naming it", code, body)
	}
}

// TestBackupAndRestoreAfterLosingEveryMember takes a backup while a session
// writes, destroys every member and its data, restores a new cluster (new
// ids, addresses and cluster id) from the file, and checks that every write
// acknowledged before the backup is there, that the old session continues
// with its id and secret, and that its cached answer is still exactly-once.
func TestBackupAndRestoreAfterLosingEveryMember(t *testing.T) {
	oldDir := t.TempDir()
	c := startCluster(t, func(cfg *node.Config) {
		withAdminHTTP(t)(cfg)
		cfg.InMemory = false
		cfg.DataDir = oldDir
		cfg.KeepAliveInterval = time.Second
		cfg.SessionTimeout = 60 * time.Second
	})
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, secret := w.createSession()
	const before = 20
	var last uint64
	for i := uint64(1); i <= before; i++ {
		last = counterValue(t, w.request(i, i, "incr"))
	}
	// A second session keeps writing while the backup is taken.
	w2 := dial(t, l.ClientAddr())
	w2.createSession()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 200; i++ {
			select {
			case <-stop:
				return
			default:
			}
			w2.send(&codec.ClientRequest{RequestID: i, LowestPending: i, Payload: []byte("incr")})
			if _, err := w2.nextWithin(5*time.Second, answers(i)); err != nil {
				return
			}
		}
	}()
	code, backup := admin(t, l.HTTPAddr(), "/admin/snapshot", testAdminToken)
	close(stop)
	wg.Wait()
	if code != http.StatusOK {
		t.Fatalf("snapshot: %d %s", code, backup)
	}
	w.close()
	w2.close()
	file := filepath.Join(t.TempDir(), "backup.tar")
	if err := os.WriteFile(file, backup, 0o600); err != nil {
		t.Fatal(err)
	}

	// Lose every member for good.
	if err := c.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if err := os.RemoveAll(oldDir); err != nil {
		t.Fatal(err)
	}

	// A new cluster: new ids, ports, data dir and cluster id.
	ms, err := node.LocalMembers(3, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ms {
		ms[i].ID = uint64(11 + i)
	}
	cfg := node.DefaultConfig()
	cfg.Members = ms
	cfg.DataDir = t.TempDir()
	cfg.ClusterID = node.NewClusterID()
	cfg.KeepAliveInterval = time.Second
	cfg.SessionTimeout = 60 * time.Second
	for _, m := range ms {
		mc := cfg
		mc.ID = m.ID
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		err = node.Restore(mc, f)
		f.Close()
		if err != nil {
			t.Fatalf("restore member %d: %v", m.ID, err)
		}
	}
	// Restoring twice into the same dir is refused: it is not empty.
	mc := cfg
	mc.ID = ms[0].ID
	if err := node.Restore(mc, bytes.NewReader(backup)); err == nil {
		t.Fatal("restore into a member's non-empty data dir succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := node.StartCluster(ctx, cfg, func() fsm.Application {
		return &counterApp{applied: &countRegistry{n: map[int]int{}}}
	}, node.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("start restored cluster: %v", err)
	}
	defer nc.Close()
	nl, err := nc.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := nl.Read(ctx, []byte{})
	if err != nil {
		t.Fatal(err)
	}
	got := counterValue(t, &codec.ClientResponse{Result: v.([]byte)})
	if got < last {
		t.Fatalf("restored counter %d; %d writes were acknowledged before the backup", got, last)
	}
	w3 := dial(t, nl.ClientAddr())
	defer w3.close()
	if m, ok := w3.continueSession(created.SessionID, secret).(*codec.SessionContinued); !ok {
		t.Fatalf("continue the old session on the restored cluster: %+v", m)
	}
	// The last request's answer is cached: resending it is not applied again.
	if again := counterValue(t, w3.request(before, before, "incr")); again != last {
		t.Fatalf("resent request %d answered %d; want its cached answer %d", before, again, last)
	}
	if next := counterValue(t, w3.request(before+1, before+1, "incr")); next != got+1 {
		t.Fatalf("new request on the old session answered %d; want %d", next, got+1)
	}
}
