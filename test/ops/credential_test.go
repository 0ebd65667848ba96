package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/admin"
	"github.com/zraft/zraft/internal/testio"
	"github.com/zraft/zraft/internal/zraftcli"
)

// TestAdminCallsNeedTheCredential: on a cluster of cmd/node processes with
// an admin token, every admin call (member add and remove, leader transfer,
// snapshot save) without the token or with a wrong one is refused with 401
// (admin.ErrUnauthorized; the zraft CLI exits 1 saying 401) and changes
// nothing; status and the member list stay readable; with the token the
// same calls work. A member without an admin token refuses them all with
// 403 (admin.ErrForbidden). Docs: docs/operations.md, "Admin access".
func TestAdminCallsNeedTheCredential(t *testing.T) {
	c := newCluster(t, map[string]any{})
	ms, good := startThree(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := leaderMember(t, good, ms)
	var target *member
	for _, m := range ms {
		if m != l {
			target = m
			break
		}
	}
	var https []string
	for _, m := range ms {
		https = append(https, m.httpAddr)
	}
	zraft := func(env map[string]string, args ...string) (int, string) {
		var o, e testio.SyncBuffer
		code := zraftcli.Run(ctx, args, &o, &e, func(k string) string { return env[k] })
		return code, o.String() + e.String()
	}
	env := map[string]string{"ZRAFT_HTTP": strings.Join(https, ","), "ZRAFT_ENDPOINTS": strings.Join(endpoints(ms), ",")}

	for name, a := range map[string]*admin.Client{
		"no token":    c.admin(ms, admin.WithToken("")),
		"wrong token": c.admin(ms, admin.WithToken("not-"+adminToken)),
	} {
		calls := map[string]func() error{
			"member add": func() error {
				return a.MemberAdd(ctx, admin.Member{ID: 4, RaftAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2"})
			},
			"member remove": func() error { return a.MemberRemove(ctx, target.id) },
			"leader transfer": func() error {
				_, err := a.TransferLeader(ctx, target.id, 5*time.Second)
				return err
			},
			"snapshot save": func() error {
				_, err := a.SnapshotSave(ctx, io.Discard)
				return err
			},
		}
		for op, call := range calls {
			err := call()
			var ae *admin.Error
			if !errors.Is(err, admin.ErrUnauthorized) || !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
				t.Errorf("%s with %s: %v; want 401 ErrUnauthorized", op, name, err)
			}
		}
		// Reading stays open.
		if _, err := a.Status(ctx); err != nil {
			t.Errorf("status with %s: %v", name, err)
		}
		if ids := memberIDs(t, a); !slices.Equal(ids, []uint64{1, 2, 3}) {
			t.Errorf("member list with %s: %v; want [1 2 3] (unchanged)", name, ids)
		}
	}
	// (An election under load may move leadership, but not to the target
	// of every refused transfer by chance.)
	if lead, err := good.Leader(ctx); err != nil || lead.ID == target.id {
		t.Fatalf("leader after refused transfers: %d %v; the refused target is %d", lead.ID, err, target.id)
	}
	// The CLI is refused the same way.
	if code, out := zraft(env, "leader", "transfer", fmt.Sprint(target.id)); code != 1 || !strings.Contains(out, "401") ||
		!strings.Contains(out, "ZRAFT_ADMIN_TOKEN") {
		t.Errorf("zraft leader transfer without the token: exit %d\n%s", code, out)
	}

	// With the token they work.
	if res, err := good.TransferLeader(ctx, target.id, 20*time.Second); err != nil || !res.Moved {
		t.Fatalf("leader transfer with the token: %+v %v", res, err)
	}
	var b bytes.Buffer
	if info, err := good.SnapshotSave(ctx, &b); err != nil || info.Files == 0 || int64(b.Len()) != info.Bytes {
		t.Fatalf("snapshot save with the token: %+v %v (%d bytes)", info, err, b.Len())
	}
	env["ZRAFT_ADMIN_TOKEN"] = adminToken
	file := filepath.Join(t.TempDir(), "backup.tar")
	if code, out := zraft(env, "snapshot", "save", file); code != 0 || !strings.Contains(out, "snapshot saved") {
		t.Errorf("zraft snapshot save with the token: exit %d\n%s", code, out)
	}

	// A member without an admin token serves no admin call.
	c2 := newCluster(t, map[string]any{})
	c2.tokenFile = ""
	one := c2.newMember(1)
	c2.start(one, []*member{one})
	a2 := c2.admin([]*member{one})
	waitLeader(t, a2, []*member{one})
	if _, err := a2.SnapshotSave(ctx, io.Discard); !errors.Is(err, admin.ErrForbidden) {
		t.Errorf("snapshot save on a member without an admin token: %v; want 403 ErrForbidden", err)
	}
	if err := a2.MemberAdd(ctx, admin.Member{ID: 2, RaftAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2"}); !errors.Is(err, admin.ErrForbidden) {
		t.Errorf("member add on a member without an admin token: %v; want 403 ErrForbidden", err)
	}
	c.checkAlive()
	c2.checkAlive()
}
