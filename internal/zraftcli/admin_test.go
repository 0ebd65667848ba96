package zraftcli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zraft/zraft/node"
)

// TestAdminCommands drives leader transfer, member list/remove/add refusals,
// snapshot save and the lag columns of status through the CLI, and checks
// that admin commands without the token are refused.
func TestAdminCommands(t *testing.T) {
	c := startCLIClusterWith(t, func(cfg *node.Config) { cfg.AdminToken = "cli-secret" })
	ctx := context.Background()
	code, out, errOut := c.zraft(ctx, "status", "--json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	var sts []memberStatus
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		t.Fatal(err)
	}
	var leader, target uint64
	for _, s := range sts {
		if s.Lag == nil {
			t.Errorf("status of member %d has no lag: %s", s.ID, out)
		}
		if s.Role == "leader" {
			leader = s.ID
		} else {
			target = s.ID
		}
	}
	if leader == 0 || target == 0 {
		t.Fatalf("no leader or follower in %s", out)
	}
	if code, out, _ := c.zraft(ctx, "status"); code != 0 || !strings.Contains(out, "CATCHING UP") {
		t.Errorf("status table lacks the lag columns: %s", out)
	}

	// Without the token: refused, nothing moves.
	tr := fmt.Sprint(target)
	if code, _, errOut := c.zraft(ctx, "leader", "transfer", tr); code != 1 || !strings.Contains(errOut, "401") {
		t.Fatalf("transfer without token: exit %d, %s", code, errOut)
	}
	if code, _, errOut := c.zraft(ctx, "--admin-token", "wrong", "snapshot", "save", filepath.Join(t.TempDir(), "x")); code != 1 || !strings.Contains(errOut, "401") {
		t.Fatalf("snapshot with a wrong token: exit %d, %s", code, errOut)
	}
	// Global flag before the command, as with etcdctl.
	code, out, errOut = c.zraft(ctx, "--admin-token", "cli-secret", "leader", "transfer", tr)
	if code != 0 || !strings.Contains(out, "leader is now "+tr) {
		t.Fatalf("transfer: exit %d, %s %s", code, out, errOut)
	}
	c.envs["ZRAFT_ADMIN_TOKEN"] = "cli-secret"
	file := filepath.Join(t.TempDir(), "backup.tar")
	if code, out, errOut := c.zraft(ctx, "snapshot", "save", file); code != 0 || !strings.Contains(out, "snapshot saved") {
		t.Fatalf("snapshot save: exit %d, %s %s", code, out, errOut)
	}
	if st, err := os.Stat(file); err != nil || st.Size() == 0 {
		t.Fatalf("backup file: %v", err)
	}
	if code, out, _ := c.zraft(ctx, "member", "list"); code != 0 || strings.Count(out, "127.0.0.1") != 6 {
		t.Fatalf("member list: exit %d\n%s", code, out)
	}
	if code, _, errOut := c.zraft(ctx, "member", "add", "1", "127.0.0.1:1", "127.0.0.1:2"); code != 1 || !strings.Contains(errOut, "already in use") {
		t.Fatalf("adding an id in use: exit %d, %s", code, errOut)
	}
	if code, out, errOut := c.zraft(ctx, "member", "remove", fmt.Sprint(leader)); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("member remove: exit %d, %s %s", code, out, errOut)
	}
	if code, _, errOut := c.zraft(ctx, "member", "frob"); code != 2 {
		t.Fatalf("member frob: exit %d, %s", code, errOut)
	}
}
