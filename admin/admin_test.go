package admin

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zraft/zraft/node/httpapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeMember answers /status as a leader (or follower) and the admin paths
// with what answer says; it records the Authorization headers it saw.
type fakeMember struct {
	srv    *httptest.Server
	role   string
	answer func(w http.ResponseWriter, r *http.Request)

	mu   sync.Mutex
	auth map[string]string // path -> Authorization
}

func newFake(t *testing.T, role string, answer func(w http.ResponseWriter, r *http.Request)) *fakeMember {
	f := &fakeMember{role: role, answer: answer, auth: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auth[r.URL.Path] = r.Header.Get("Authorization")
		role := f.role
		f.mu.Unlock()
		if r.URL.Path == "/status" {
			_ = json.NewEncoder(w).Encode(httpapi.Status{ID: 1, Role: role, LeaderID: 1, Applied: 500,
				Members: []httpapi.Member{{ID: 2, RaftAddr: "r2", ClientAddr: "c2"}, {ID: 1, RaftAddr: "r1", ClientAddr: "c1"}}})
			return
		}
		f.answer(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeMember) setRole(role string) {
	f.mu.Lock()
	f.role = role
	f.mu.Unlock()
}

func (f *fakeMember) ep() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeMember) authOf(path string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.auth[path]
}

func newClient(t *testing.T, eps []string, opts ...Option) *Client {
	t.Helper()
	c, err := New(eps, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestStatusCodesBecomeTypedErrors: each refusal of a member is its
// sentinel, with the member's reason in the *Error.
func TestStatusCodesBecomeTypedErrors(t *testing.T) {
	for _, tc := range []struct {
		code int
		want error
	}{
		{http.StatusUnauthorized, ErrUnauthorized},
		{http.StatusForbidden, ErrForbidden},
		{http.StatusConflict, ErrRefused},
		{http.StatusBadRequest, ErrRefused},
		{http.StatusServiceUnavailable, ErrUnavailable},
		{http.StatusMisdirectedRequest, ErrNotLeader},
		{http.StatusTeapot, ErrBadAnswer},
	} {
		f := newFake(t, "leader", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "the member's reason", tc.code)
		})
		c := newClient(t, []string{f.ep()}, WithToken("tok"))
		// A short deadline: a 421 is retried until it runs out, and the
		// answer must still be the member's.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.MemberRemove(ctx, 3)
		cancel()
		var e *Error
		if !errors.Is(err, tc.want) || !errors.As(err, &e) || e.Status != tc.code || e.Message != "the member's reason" {
			t.Errorf("HTTP %d: %v (%#v); want %v with the reason", tc.code, err, e, tc.want)
		}
		if got := f.authOf("/admin/members/remove"); got != "Bearer tok" {
			t.Errorf("admin call sent Authorization %q; want the bearer token", got)
		}
		if got := f.authOf("/status"); got != "" {
			t.Errorf("status sent Authorization %q; want none", got)
		}
	}
}

func TestBadArgumentsAreRefusedLocally(t *testing.T) {
	if _, err := New(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("New without endpoints: %v", err)
	}
	for _, ep := range []string{"host:1/path", "http://host:1", "host", "user@host:1"} {
		if _, err := New([]string{ep}); !errors.Is(err, ErrInvalid) {
			t.Errorf("New(%q): %v; want ErrInvalid", ep, err)
		}
	}
	if _, err := New([]string{"h:1"}, WithTimeout(0)); !errors.Is(err, ErrInvalid) {
		t.Errorf("New with a zero timeout: %v", err)
	}
	sent := false
	f := newFake(t, "leader", func(w http.ResponseWriter, r *http.Request) { sent = true })
	c := newClient(t, []string{f.ep()})
	ctx := context.Background()
	for name, err := range map[string]error{
		"add id 0":        c.MemberAdd(ctx, Member{RaftAddr: "a:1", ClientAddr: "b:1"}),
		"add no address":  c.MemberAdd(ctx, Member{ID: 4}),
		"remove id 0":     c.MemberRemove(ctx, 0),
		"transfer wait 0": func() error { _, err := c.TransferLeader(ctx, 2, 0); return err }(),
		"transfer 2m":     func() error { _, err := c.TransferLeader(ctx, 2, 2*time.Minute); return err }(),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v; want ErrInvalid", name, err)
		}
	}
	if sent {
		t.Error("a refused argument reached the member")
	}
}

// TestNoMemberAnswers: a closed port is ErrUnavailable naming the member;
// a 403 from every member stays ErrForbidden.
func TestNoMemberAnswers(t *testing.T) {
	f := newFake(t, "leader", nil)
	dead := f.ep()
	f.srv.Close()
	c := newClient(t, []string{dead}, WithTimeout(2*time.Second))
	sts, err := c.Status(context.Background())
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), NoAnswer) || len(sts) != 1 || sts[0].Role != "unreachable" {
		t.Fatalf("status of a closed port: %v %+v", err, sts)
	}
	if err := c.MemberRemove(context.Background(), 2); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("remove with no member up: %v", err)
	}
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "client certificate required", http.StatusForbidden)
	}))
	defer forbidden.Close()
	c2 := newClient(t, []string{strings.TrimPrefix(forbidden.URL, "http://")})
	if _, err := c2.Status(context.Background()); !errors.Is(err, ErrForbidden) ||
		!strings.Contains(err.Error(), "403 Forbidden: client certificate required") {
		t.Fatalf("status of a member that wants a certificate: %v", err)
	}
}

// TestStatusLagAndMemberList: lag is computed against the leader; the
// member list comes sorted from the leader.
func TestStatusLagAndMemberList(t *testing.T) {
	l := newFake(t, "leader", nil)
	fo := newFake(t, "follower", nil)
	c := newClient(t, []string{fo.ep(), l.ep()})
	sts, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Lag == nil || *s.Lag != 0 || s.CatchingUp {
			t.Errorf("member at %s: lag %v catching up %v; want 0, false", s.HTTP, s.Lag, s.CatchingUp)
		}
	}
	ms, err := c.MemberList(context.Background())
	if err != nil || ms.From != l.ep() || ms.LeaderID != 1 || len(ms.Members) != 2 || ms.Members[0].ID != 1 {
		t.Fatalf("member list: %+v %v", ms, err)
	}
}

func backup(t *testing.T, files map[string]string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o640, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestSnapshotSaveChecksTheStream: a whole backup is written as sent; a
// truncated one or one that is not a tar stream fails with ErrBadAnswer
// and SnapshotSaveFile leaves no file behind.
func TestSnapshotSaveChecksTheStream(t *testing.T) {
	good := backup(t, map[string]string{"snapshot.metadata": "meta", "snapshot-0001.gbsnap": strings.Repeat("x", 5000)})
	for name, tc := range map[string]struct {
		body []byte
		want error
	}{
		"whole":             {good, nil},
		"cut in an entry":   {good[:3000], ErrBadAnswer},
		"cut at an entry":   {good[:len(good)-trailerSize], ErrBadAnswer},
		"cut in the marker": {good[:len(good)-10], ErrBadAnswer},
		"not tar":           {[]byte("<html>hello</html>"), ErrBadAnswer},
		"empty":             {backup(t, nil), ErrBadAnswer},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, "leader", func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/admin/snapshot" || r.Method != http.MethodPost {
					http.NotFound(w, r)
					return
				}
				_, _ = w.Write(tc.body)
			})
			c := newClient(t, []string{f.ep()}, WithToken("t"))
			var out bytes.Buffer
			info, err := c.SnapshotSave(context.Background(), &out)
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("SnapshotSave: %v; want %v", err, tc.want)
			}
			if tc.want == nil && (!bytes.Equal(out.Bytes(), good) || info.Bytes != int64(len(good)) || info.Files != 2 || info.From != f.ep()) {
				t.Fatalf("SnapshotSave wrote %d bytes, info %+v; want the %d bytes sent", out.Len(), info, len(good))
			}
			file := filepath.Join(t.TempDir(), "b.tar")
			_, err = c.SnapshotSaveFile(context.Background(), file)
			_, statErr := os.Stat(file)
			if tc.want == nil && (err != nil || statErr != nil) {
				t.Fatalf("SnapshotSaveFile: %v %v", err, statErr)
			}
			if tc.want != nil {
				if !errors.Is(err, tc.want) || !os.IsNotExist(statErr) {
					t.Fatalf("SnapshotSaveFile of a bad stream: %v, file: %v; want %v and no file", err, statErr, tc.want)
				}
				if left, _ := filepath.Glob(file + "*"); len(left) != 0 {
					t.Fatalf("partial files left: %v", left)
				}
			}
		})
	}
}

// TestTransferNotMoved: a transfer that did not move is ErrNotMoved with
// the result saying who leads.
func TestTransferNotMoved(t *testing.T) {
	f := newFake(t, "leader", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("id") != "3" || r.URL.Query().Get("wait") != "2s" {
			http.Error(w, "unexpected "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(TransferResult{Moved: false, LeaderID: 1, WaitedMS: 2000})
	})
	c := newClient(t, []string{f.ep()})
	res, err := c.TransferLeader(context.Background(), 3, 2*time.Second)
	if !errors.Is(err, ErrNotMoved) || res.LeaderID != 1 || res.Moved {
		t.Fatalf("transfer: %+v %v; want ErrNotMoved, leader 1", res, err)
	}
}

// A tool linking the admin API must not link the node's heavy
// dependencies: only the standard library and node/httpapi.
func TestImportsNoServerPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/zraft/zraft/node/httpapi") {
		t.Fatalf("go list -deps output lacks node/httpapi: %q", out)
	}
	for _, dep := range deps {
		if strings.Contains(strings.SplitN(dep, "/", 2)[0], ".") &&
			dep != "github.com/zraft/zraft/node/httpapi" && dep != "github.com/zraft/zraft/admin" {
			t.Errorf("admin depends on %s", dep)
		}
	}
}

// TestChangeFollowsLeadershipThatMoved: a membership change that reaches a
// member which no longer leads (421) is sent again to the member leading
// now, and succeeds there.
func TestChangeFollowsLeadershipThatMoved(t *testing.T) {
	var a, b atomic.Pointer[fakeMember]
	var askedA, askedB atomic.Int32
	fa := newFake(t, "leader", func(w http.ResponseWriter, r *http.Request) {
		askedA.Add(1)
		// Leadership moved to b just before a was asked.
		a.Load().setRole("follower")
		b.Load().setRole("leader")
		http.Error(w, "node: membership: node: not the leader: member 1 does not lead (member 2 does)", http.StatusMisdirectedRequest)
	})
	fb := newFake(t, "follower", func(w http.ResponseWriter, r *http.Request) {
		askedB.Add(1)
		_, _ = io.WriteString(w, "member 3 removed\n")
	})
	a.Store(fa)
	b.Store(fb)
	c := newClient(t, []string{fa.ep(), fb.ep()}, WithToken("tok"))
	if err := c.MemberRemove(context.Background(), 3); err != nil {
		t.Fatalf("remove after leadership moved: %v", err)
	}
	if askedA.Load() != 1 || askedB.Load() != 1 {
		t.Fatalf("asked the old leader %d times and the new one %d times; want once each", askedA.Load(), askedB.Load())
	}
}
