package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/internal/testio"
	"github.com/zraft/zraft/internal/testnet"
	"github.com/zraft/zraft/internal/zraftcli"
	"github.com/zraft/zraft/node"
)

// member is one `node` command running in-process.
type member struct {
	cancel context.CancelFunc
	done   chan error
	out    *testio.SyncBuffer
}

func startMember(t *testing.T, args ...string) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{cancel: cancel, done: make(chan error, 1), out: &testio.SyncBuffer{}}
	go func() { m.done <- run(ctx, append(args, "--log-level", "error"), m.out, io.Discard) }()
	return m
}

// stop ends the member as SIGTERM would and returns run's error.
func (m *member) stop() error {
	m.cancel()
	return <-m.done
}

// addrs are the ports of member i (from 1) of a cluster whose ports start
// at base: Raft base+i-1, client base+10+i-1, HTTP base+20+i-1.
func addrs(base, i int) (raft, client, http string) {
	return fmt.Sprintf("127.0.0.1:%d", base+i-1), fmt.Sprintf("127.0.0.1:%d", base+10+i-1), fmt.Sprintf("127.0.0.1:%d", base+20+i-1)
}

// TestRunbooks follows docs/operations.md as an operator would, with the
// node and zraft commands: start three members with an admin token, grow
// to four (zraft member add + node --join), move the leader, back up while
// writing, lose every member, restore a new cluster from the backup and
// read everything back.
func TestRunbooks(t *testing.T) {
	dir := t.TempDir()
	base := testnet.ConsecutivePorts(t, 30)
	token := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(token, []byte("runbook-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clusterID := node.NewClusterID()
	var members, endpoints, https []string
	for i := 1; i <= 3; i++ {
		r, c, h := addrs(base, i)
		members = append(members, fmt.Sprintf("%d=%s/%s", i, r, c))
		endpoints, https = append(endpoints, c), append(https, h)
	}
	var running []*member
	t.Cleanup(func() {
		for _, m := range running {
			_ = m.stop()
		}
	})
	for i := 1; i <= 3; i++ {
		_, _, h := addrs(base, i)
		running = append(running, startMember(t, "--id", fmt.Sprint(i), "--members", strings.Join(members, ","),
			"--data", filepath.Join(dir, fmt.Sprint("m", i)), "--cluster-id", clusterID, "--http", h,
			"--admin-token-file", token))
	}
	env := map[string]string{"ZRAFT_ENDPOINTS": strings.Join(endpoints, ","), "ZRAFT_HTTP": strings.Join(https, ",")}
	zraft := func(args ...string) (int, string, string) {
		var o, e testio.SyncBuffer
		code := zraftcli.Run(context.Background(), args, &o, &e, func(k string) string { return env[k] })
		return code, o.String(), e.String()
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually("no leader", func() bool { code, out, _ := zraft("status"); return code == 0 && strings.Contains(out, "leader") })
	for i := 0; i < 20; i++ {
		if code, _, e := zraft("kv", "set", fmt.Sprint("k", i), fmt.Sprint("v", i)); code != 0 {
			t.Fatalf("kv set: %s", e)
		}
	}

	// Grow: member add, then node --join with an empty data dir.
	r4, c4, h4 := addrs(base, 4)
	if code, _, e := zraft("member", "add", "4", r4, c4); code != 1 || !strings.Contains(e, "401") {
		t.Fatalf("member add without the admin token: exit %d %s", code, e)
	}
	env["ZRAFT_ADMIN_TOKEN"] = "runbook-secret"
	if code, o, e := zraft("member", "add", "4", r4, c4); code != 0 {
		t.Fatalf("member add: %s %s", o, e)
	}
	// --members: how to reach the cluster (its current members) and this one.
	running = append(running, startMember(t, "--join", "--id", "4", "--members", strings.Join(members, ",")+fmt.Sprintf(",4=%s/%s", r4, c4),
		"--data", filepath.Join(dir, "m4"), "--cluster-id", clusterID, "--http", h4, "--admin-token-file", token))
	env["ZRAFT_HTTP"] += "," + h4
	env["ZRAFT_ENDPOINTS"] += "," + c4
	eventually("member 4 did not catch up", func() bool {
		code, out, _ := zraft("status", "--json")
		var sts []struct {
			ID      uint64  `json:"id"`
			Applied uint64  `json:"applied"`
			Lag     *uint64 `json:"lag"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &sts) != nil {
			return false
		}
		for _, s := range sts {
			if s.ID == 4 && s.Applied > 20 && s.Lag != nil && *s.Lag == 0 {
				return true
			}
		}
		return false
	})
	if code, o, e := zraft("leader", "transfer", "4"); code != 0 || !strings.Contains(o, "leader is now 4") {
		t.Fatalf("leader transfer 4: %s %s", o, e)
	}
	if code, o, _ := zraft("kv", "get", "k7"); code != 0 || o != "v7\n" {
		t.Fatalf("kv get through the new leader: %q", o)
	}

	// Back up while writing.
	file := filepath.Join(dir, "backup.tar")
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for i := 100; i < 120; i++ {
			zraft("kv", "set", fmt.Sprint("k", i), "late")
		}
	}()
	if code, o, e := zraft("snapshot", "save", file); code != 0 {
		t.Fatalf("snapshot save: %s %s", o, e)
	}
	<-writing

	// Lose every member for good.
	for _, m := range running {
		if err := m.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}
	running = nil
	if err := os.RemoveAll(dir + "/m1"); err != nil {
		t.Fatal(err)
	}

	// Restore: a new cluster id, new ids and ports.
	newID := node.NewClusterID()
	base2 := testnet.ConsecutivePorts(t, 30)
	members, endpoints, https = nil, nil, nil
	for i := 1; i <= 3; i++ {
		r, c, h := addrs(base2, i)
		members = append(members, fmt.Sprintf("%d=%s/%s", 10+i, r, c))
		endpoints, https = append(endpoints, c), append(https, h)
	}
	for i := 1; i <= 3; i++ {
		_, _, h := addrs(base2, i)
		running = append(running, startMember(t, "--restore", file, "--id", fmt.Sprint(10+i), "--members", strings.Join(members, ","),
			"--data", filepath.Join(dir, fmt.Sprint("r", i)), "--cluster-id", newID, "--http", h, "--admin-token-file", token))
	}
	env["ZRAFT_ENDPOINTS"], env["ZRAFT_HTTP"] = strings.Join(endpoints, ","), strings.Join(https, ",")
	eventually("restored cluster elects no leader", func() bool {
		code, out, _ := zraft("status")
		return code == 0 && strings.Contains(out, "leader")
	})
	for i := 0; i < 20; i++ {
		if code, o, e := zraft("kv", "get", fmt.Sprint("k", i)); code != 0 || o != fmt.Sprint("v", i, "\n") {
			t.Fatalf("restored kv get k%d: %q %s", i, o, e)
		}
	}
	eventually("restored members missing from member list", func() bool {
		code, out, _ := zraft("member", "list")
		return code == 0 && strings.Contains(out, "\n11 ") && strings.Contains(out, "\n13 ") && !strings.Contains(out, "\n1 ")
	})
}
