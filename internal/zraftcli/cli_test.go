package zraftcli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/internal/testio"
	"github.com/zraft/zraft/internal/testnet"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type cli struct {
	t    *testing.T
	envs map[string]string
}

func startCLICluster(t *testing.T) *cli { return startCLIClusterWith(t, nil) }

// startCLIClusterWith starts a 3-member kv cluster with HTTP, its config
// adjusted by tweak when not nil.
func startCLIClusterWith(t *testing.T, tweak func(*node.Config)) *cli {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.InMemory = true
	if tweak != nil {
		tweak(&cfg)
	}
	var httpBase int
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := node.StartLocalCluster(ctx, 3, cfg, func(cfg *node.Config) error {
		httpBase = testnet.ConsecutivePorts(t, 3)
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", httpBase)
		return nil
	}, func() fsm.Application {
		s, err := kv.New(kv.DefaultConfig())
		if err != nil {
			panic(err)
		}
		return s
	}, node.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var https []string
	for i := 0; i < 3; i++ {
		https = append(https, fmt.Sprintf("127.0.0.1:%d", httpBase+i))
	}
	return &cli{t: t, envs: map[string]string{
		"ZRAFT_ENDPOINTS": strings.Join(c.Endpoints(), ","),
		"ZRAFT_HTTP":      strings.Join(https, ","),
	}}
}

// zraft runs the CLI as a user would (same entry point as main, minus
// os.Exit) and returns its exit code, stdout and stderr.
func (c *cli) zraft(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut testio.SyncBuffer
	code := run(ctx, args, env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return c.envs[k] }})
	return code, out.String(), errOut.String()
}

func (c *cli) expect(args string, wantCode int, wantOut, wantErr string) {
	c.t.Helper()
	code, out, errOut := c.zraft(context.Background(), strings.Fields(args)...)
	if code != wantCode || out != wantOut || !strings.Contains(errOut, wantErr) {
		c.t.Fatalf("zraft %s: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
			args, code, out, errOut, wantCode, wantOut, wantErr)
	}
}

func TestKVCommands(t *testing.T) {
	c := startCLICluster(t)
	c.expect("kv set color red", 0, "OK\n", "")
	c.expect("kv get color", 0, "red\n", "")
	c.expect("kv get nothing", 1, "", "not found")
	c.expect("kv cas color blue green", 1, "", "mismatch")
	c.expect("kv cas color red green", 0, "OK\n", "")
	c.expect("kv get color", 0, "green\n", "")
	c.expect("kv incr n", 0, "1\n", "")
	c.expect("kv incr n 41", 0, "42\n", "")
	c.expect("kv del color", 0, "OK\n", "")
	c.expect("kv del color", 1, "", "not found")
}

func TestKVWatchPrintsEachChange(t *testing.T) {
	c := startCLICluster(t)
	c.expect("kv set w 0", 0, "OK\n", "")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut testio.SyncBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"kv", "watch", "w"}, env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return c.envs[k] }})
	}()
	waitOutput := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("watch printed %q, want it to contain %q (stderr %q)", out.String(), want, errOut.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitOutput("w=0\n") // the current value first
	c.expect("kv set w 1", 0, "OK\n", "")
	c.expect("kv set w 2", 0, "OK\n", "")
	c.expect("kv del w", 0, "OK\n", "")
	waitOutput("w=0\nw=1\nw=2\nw deleted\n")
	cancel() // Ctrl-C
	if code := <-done; code != 0 {
		t.Fatalf("watch exited %d (stderr %q)", code, errOut.String())
	}
}

func TestStatusAndSessions(t *testing.T) {
	c := startCLICluster(t)
	code, out, errOut := c.zraft(context.Background(), "status")
	if code != 0 || strings.Count(out, "leader") != 1 || strings.Count(out, "follower") != 2 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = c.zraft(context.Background(), "status", "--json")
	if code != 0 || !strings.Contains(out, `"role": "leader"`) {
		t.Fatalf("status --json: exit %d\n%s", code, out)
	}
	// A watching session is live while sessions lists.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var wout testio.SyncBuffer
	go func() {
		done <- run(ctx, []string{"kv", "watch", "x"}, env{stdout: &wout, stderr: io.Discard, getenv: func(k string) string { return c.envs[k] }})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, _ = c.zraft(context.Background(), "sessions")
		if code == 0 && strings.Contains(out, "1 sessions") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions never listed the watcher: exit %d\n%s", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestUsageAndUnreachable(t *testing.T) {
	c := &cli{t: t, envs: map[string]string{"ZRAFT_ENDPOINTS": "127.0.0.1:1", "ZRAFT_HTTP": "127.0.0.1:1"}}
	c.expect("", 2, "", "no command")
	c.expect("frobnicate", 2, "", "unknown command")
	c.expect("kv get", 2, "", "kv get takes KEY")
	c.expect("kv incr n x", 2, "", "N must be an integer")
	c.expect("kv get k --timeout 300ms", 1, "", "cannot reach the cluster")
	code, out, errOut := c.zraft(context.Background(), "status", "--timeout", "300ms")
	if code != 1 || !strings.Contains(out, "unreachable") || !strings.Contains(errOut, "no member answered") {
		t.Fatalf("status of an unreachable cluster: exit %d, %q, %q", code, out, errOut)
	}
	c.expect("kv set --help", 0, "", "Usage: zraft kv set KEY VALUE")
	c.expect("help", 0, usage, "")
}

func TestBenchCommand(t *testing.T) {
	c := startCLICluster(t)
	svg := filepath.Join(t.TempDir(), "curves.svg")
	code, out, errOut := c.zraft(context.Background(), "bench", "--sessions", "2", "--inflight", "2",
		"--duration", "500ms", "--warmup", "100ms", "--read-ratio", "0.5", "--keys", "20", "--json", "--quiet",
		"--plot", svg)
	if code != 0 {
		t.Fatalf("bench: exit %d\n%s\n%s", code, out, errOut)
	}
	var doc struct {
		Results []struct {
			Name   string  `json:"name"`
			Ops    uint64  `json:"ops"`
			Errors uint64  `json:"errors"`
			Tput   float64 `json:"throughput"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Results) != 1 {
		t.Fatalf("bench --json output %q: %v", out, err)
	}
	if r := doc.Results[0]; r.Ops == 0 || r.Errors != 0 {
		t.Fatalf("bench result %+v: want operations and no errors", r)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.HasPrefix(b, []byte("<svg")) || !bytes.Contains(b, []byte(`data-name="zraft"`)) {
		t.Fatalf("--plot wrote %q (%v), want an SVG with the zraft curve", b, err)
	}
	c.expect("bench --sessions 0", 2, "", "invalid config")

	// The fan-out workload: one run without and one with watchers.
	code, out, errOut = c.zraft(context.Background(), "bench", "--sessions", "1", "--inflight", "2",
		"--duration", "500ms", "--warmup", "100ms", "--keys", "20", "--watchers", "3", "--json", "--quiet")
	if code != 0 {
		t.Fatalf("bench --watchers: exit %d\n%s\n%s", code, out, errOut)
	}
	var watch struct {
		Watch []struct {
			Watchers      int    `json:"watchers"`
			Notifications uint64 `json:"notifications"`
			CaughtUp      bool   `json:"caught_up"`
		} `json:"watch"`
	}
	if err := json.Unmarshal([]byte(out), &watch); err != nil || len(watch.Watch) != 2 {
		t.Fatalf("bench --watchers --json output %q: %v", out, err)
	}
	if w := watch.Watch[1]; w.Watchers != 3 || w.Notifications == 0 || !w.CaughtUp || watch.Watch[0].Notifications != 0 {
		t.Fatalf("watch results %+v", watch.Watch)
	}
	c.expect("bench --watchers 5000", 2, "", "watchers must be 0..4096")
}
