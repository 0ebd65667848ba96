package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/node/httpapi"
)

func validConfig() Config {
	c := DefaultConfig()
	c.ID = 1
	c.DataDir = "/tmp/x"
	c.Members = []Member{{1, "127.0.0.1:1", "127.0.0.1:2"}, {2, "127.0.0.1:3", "127.0.0.1:4"}}
	return c
}

func TestConfigValidate(t *testing.T) {
	if v := validConfig(); v.Validate() != nil {
		err := v.Validate()
		t.Fatalf("valid config rejected: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"no id":             {func(c *Config) { c.ID = 0 }, "id must be set"},
		"not a member":      {func(c *Config) { c.ID = 9 }, "not among the members"},
		"duplicate member":  {func(c *Config) { c.Members[1].ID = 1 }, "listed twice"},
		"bad raft addr":     {func(c *Config) { c.Members[0].RaftAddr = "nope" }, "raft_addr"},
		"no data dir":       {func(c *Config) { c.DataDir = "" }, "data_dir"},
		"short timeout":     {func(c *Config) { c.SessionTimeout = c.KeepAliveInterval }, "at least 3 keep-alive"},
		"zero limit":        {func(c *Config) { c.MaxConns = 0 }, "max_conns"},
		"payload > frame":   {func(c *Config) { c.MaxPayload = c.MaxFrame + 1 }, "max_payload"},
		"half tls":          {func(c *Config) { c.TLSCertFile = "a" }, "go together"},
		"election too fast": {func(c *Config) { c.ElectionRTT = 1 }, "election_rtt"},
	} {
		c := validConfig()
		tc.mut(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an ErrConfig mentioning %q", name, err, tc.want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.json")
	body := `{"id": 2, "data_dir": "/var/lib/zraft", "session_timeout": "30s", "max_conns": 5, "insecure_peer": true, "peer_idle_timeout": "1m",
	  "members": [{"id": 1, "raft_addr": "10.0.0.1:7201", "client_addr": "10.0.0.1:7101"},
	              {"id": 2, "raft_addr": "10.0.0.2:7201", "client_addr": "10.0.0.2:7101"}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 2 || c.SessionTimeout != 30*time.Second || c.MaxConns != 5 || len(c.Members) != 2 ||
		!c.InsecurePeer || c.PeerIdleTimeout != time.Minute ||
		c.KeepAliveInterval != DefaultConfig().KeepAliveInterval {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(`{"id": 1, "bogus": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown field: %v", err)
	}
}

// tally is a minimal application: every command adds one.
type tally struct {
	mu sync.Mutex
	n  uint64
}

func (a *tally) Apply(_ *fsm.Context, _ []byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	return binary.BigEndian.AppendUint64(nil, a.n), nil
}
func (a *tally) Query([]byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return binary.BigEndian.AppendUint64(nil, a.n), nil
}
func (a *tally) SessionOpened(*fsm.Context, fsm.SessionInfo) error { return nil }
func (a *tally) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {
}
func (a *tally) SaveSnapshot(w io.Writer) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := w.Write(binary.BigEndian.AppendUint64(nil, a.n))
	return err
}
func (a *tally) RecoverFromSnapshot(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n = binary.BigEndian.Uint64(b[:])
	return nil
}

// producer is the user actor of docs/extending.md: while its node leads, it
// proposes one application command per tick.
type producer struct {
	h     *Handle
	timer *time.Timer
}

type produceTick struct{}

func (p *producer) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		p.arm(c)
	case *actor.Stopping, *actor.Restarting:
		p.timer.Stop()
	case *produceTick:
		if p.h.IsLeader() {
			cmd := fsm.EncodeCommand(nil, fsm.AppCommand{Time: fsm.Stamp(time.Now()), Payload: []byte("job")})
			c.Send(p.h.Raft, &actors.Propose{Cmd: cmd, ReplyTo: c.Self()})
		}
		p.arm(c)
	case *actors.Proposed:
		_ = m // a failed proposal is simply retried on the next tick
	}
}

func (p *producer) arm(c actor.Context) {
	system, self := c.ActorSystem(), c.Self()
	p.timer = time.AfterFunc(20*time.Millisecond, func() { system.Root.Send(self, &produceTick{}) })
}

func startTestCluster(t *testing.T, tweak func(*Config), opts ...Option) *Cluster {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InMemory = true
	if tweak != nil {
		tweak(&cfg)
	}
	opts = append(opts, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := StartLocalCluster(ctx, 3, cfg, nil, func() fsm.Application { return &tally{} }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestUserActorProposesCommands(t *testing.T) {
	c := startTestCluster(t, nil, WithActor(UserActor{Name: "producer", Producer: func(h *Handle) actor.Actor {
		return &producer{h: h}
	}}))
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := c.Leader().Read(ctx, []byte("count"))
		cancel()
		if err == nil && binary.BigEndian.Uint64(res.([]byte)) >= 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("user actor's commands were not applied (last read %v, %v)", res, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHTTPStatusHealthAndMetrics(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	// The cluster runs without HTTP; member 1's endpoint is started on a
	// port known to be free (three consecutive free ports are not).
	c := startTestCluster(t, func(cfg *Config) { cfg.HTTPAddr = "" })
	n := c.Node(1)
	n.cfg.HTTPAddr = "127.0.0.1:" + itoa(port)
	if err := n.startHTTP(); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + n.cfg.HTTPAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	code, body := get("/status")
	var st httpapi.Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.ID != 1 || st.LeaderID == 0 || len(st.Members) != 3 {
		t.Fatalf("/status = %d %s", code, body)
	}
	code, body = get("/sessions")
	var ss []httpapi.Session
	if code != 200 || json.Unmarshal([]byte(body), &ss) != nil {
		t.Fatalf("/sessions = %d %s", code, body)
	}
	if code, _ := get("/sessions?after=zz"); code != 400 {
		t.Fatalf("/sessions with a bad id = %d, want 400", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "zraft_is_leader") || !strings.Contains(body, "zraft_leader_changes_total") {
		t.Fatalf("/metrics = %d, missing zraft metrics", code)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ without pprof = %d, want 404", code)
	}

	// With pprof on, the profiles are served behind the admin credential.
	_ = n.http.Close()
	n.httpWG.Wait()
	if port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	n.cfg.HTTPAddr, n.cfg.Pprof, n.cfg.AdminToken = "127.0.0.1:"+itoa(port), true, "pprof-test-token"
	if err := n.startHTTP(); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("/debug/pprof/goroutine?debug=1"); code != http.StatusUnauthorized {
		t.Fatalf("/debug/pprof/ without the admin credential = %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", "http://"+n.cfg.HTTPAddr+"/debug/pprof/goroutine?debug=1", nil)
	req.Header.Set("Authorization", "Bearer pprof-test-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Fatalf("/debug/pprof/goroutine with the credential = %d %.100q", resp.StatusCode, b)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
