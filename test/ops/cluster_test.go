package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zraft/zraft/admin"
	"github.com/zraft/zraft/internal/testnet"
	"github.com/zraft/zraft/node"
)

// adminToken is the admin credential every test cluster is started with.
const adminToken = "ops-test-admin-token-5d1e"

// member is one cmd/node process. Its addresses and data dir are fixed at
// creation.
type member struct {
	id                             uint64
	raftAddr, clientAddr, httpAddr string
	dir, logPath                   string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	ending  bool  // the test is ending this process
	exitErr error // why it exited, once exited is closed
	running bool
}

// cluster is a set of member processes sharing a cluster id, a config file
// (snapshot_entries, session_timeout) and an admin token file.
type cluster struct {
	t         *testing.T
	root      string
	clusterID string
	config    string    // JSON config file every member loads
	tokenFile string    // "" : members run without an admin token
	members   []*member // every member ever started, running or not
}

// newCluster prepares a cluster directory; config is the members' JSON
// config (node.LoadConfig's fields).
func newCluster(t *testing.T, config map[string]any) *cluster {
	t.Helper()
	root, err := os.MkdirTemp("", "zraft-ops-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, root: root, clusterID: node.NewClusterID(),
		config: filepath.Join(root, "member.json"), tokenFile: filepath.Join(root, "admin-token")}
	b, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stopAll()
		if *flagKeep || t.Failed() {
			t.Logf("member data and logs kept in %s", root)
			return
		}
		os.RemoveAll(root)
	})
	return c
}

// newMember allocates addresses and an empty data dir for member id.
func (c *cluster) newMember(id uint64) *member {
	c.t.Helper()
	ports, err := testnet.FreePorts(3)
	if err != nil {
		c.t.Fatal(err)
	}
	m := &member{id: id,
		raftAddr:   fmt.Sprintf("127.0.0.1:%d", ports[0]),
		clientAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		httpAddr:   fmt.Sprintf("127.0.0.1:%d", ports[2]),
		dir:        filepath.Join(c.root, fmt.Sprintf("m%d", id)),
		logPath:    filepath.Join(c.root, fmt.Sprintf("m%d.log", id)),
	}
	if err := os.MkdirAll(m.dir, 0o750); err != nil {
		c.t.Fatal(err)
	}
	c.members = append(c.members, m)
	return m
}

// membersFlag is --members for ms.
func membersFlag(ms []*member) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%d=%s/%s", m.id, m.raftAddr, m.clientAddr)
	}
	return strings.Join(parts, ",")
}

// start runs member m: node --config ... --id --members --cluster-id --data
// --http --admin-token-file, plus extra flags (--join, --restore FILE).
func (c *cluster) start(m *member, members []*member, extra ...string) {
	c.t.Helper()
	if err := c.startErr(m, members, c.clusterID, extra...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) startErr(m *member, members []*member, clusterID string, extra ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return fmt.Errorf("member %d is already running", m.id)
	}
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	args := []string{"--config", c.config, "--id", fmt.Sprint(m.id), "--members", membersFlag(members),
		"--cluster-id", clusterID, "--data", m.dir, "--http", m.httpAddr, "--log-level", "warn"}
	if c.tokenFile != "" {
		args = append(args, "--admin-token-file", c.tokenFile)
	}
	args = append(args, extra...)
	fmt.Fprintf(logf, "=== %s ops: node %s\n", time.Now().Format("15:04:05.000"), strings.Join(args, " "))
	cmd := exec.Command(nodeBin, args...)
	cmd.Dir = m.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a test binary that dies takes its members with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start member %d: %w", m.id, err)
	}
	m.cmd, m.exited, m.ending, m.running, m.exitErr = cmd, make(chan struct{}), false, true, nil
	exited := m.exited
	go func() {
		err := cmd.Wait()
		m.mu.Lock()
		m.running = false
		m.exitErr = err
		m.mu.Unlock()
		close(exited)
	}()
	return nil
}

// signal ends m with sig and waits up to 15 s for it to exit (then kills
// it).
func (c *cluster) signal(m *member, sig syscall.Signal) error {
	m.mu.Lock()
	if !m.running {
		m.mu.Unlock()
		return nil
	}
	m.ending = true
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to member %d: %w", sig, m.id, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("member %d did not stop within 15 s of %v", m.id, sig)
	}
}

// kill ends m with SIGKILL (kill -9) and waits until it is gone.
func (c *cluster) kill(m *member) {
	c.t.Helper()
	if err := c.signal(m, syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
}

// stop ends m gracefully (SIGTERM).
func (c *cluster) stop(m *member) {
	c.t.Helper()
	if err := c.signal(m, syscall.SIGTERM); err != nil {
		c.t.Error(err)
	}
}

func (c *cluster) stopAll() {
	for _, m := range c.members {
		if err := c.signal(m, syscall.SIGTERM); err != nil {
			c.t.Logf("stop: %v", err)
		}
	}
}

// checkAlive fails the test when a member the test did not end has exited.
func (c *cluster) checkAlive() {
	c.t.Helper()
	for _, m := range c.members {
		m.mu.Lock()
		died := m.cmd != nil && !m.running && !m.ending
		err := m.exitErr
		m.mu.Unlock()
		if died {
			c.t.Fatalf("member %d exited on its own (%v); log tail:\n%s", m.id, err, m.logTail(3000))
		}
	}
}

// admin returns an admin API client for ms's HTTP endpoints with the
// admin token; closed at the end of the test.
func (c *cluster) admin(ms []*member, opts ...admin.Option) *admin.Client {
	c.t.Helper()
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.httpAddr)
	}
	a, err := admin.New(eps, append([]admin.Option{admin.WithToken(adminToken), admin.WithTimeout(5 * time.Second)}, opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { a.Close() })
	return a
}

func endpoints(ms []*member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.clientAddr
	}
	return out
}

// waitFor polls cond every 50 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		if why != "" {
			last = why
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, d, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLeader waits until every member of ms answers and all name the same
// leader among them; it returns the leader's id.
func waitLeader(t *testing.T, a *admin.Client, ms []*member) uint64 {
	t.Helper()
	var leader uint64
	waitFor(t, 30*time.Second, "an agreed leader", func() (bool, string) {
		sts, err := a.Status(context.Background())
		if err != nil {
			return false, err.Error()
		}
		leader = 0
		for _, s := range sts {
			if s.Err != nil || s.LeaderID == 0 || (leader != 0 && s.LeaderID != leader) {
				return false, fmt.Sprintf("%s: %s leader %d %s", s.HTTP, s.Role, s.LeaderID, s.Error)
			}
			leader = s.LeaderID
		}
		return slices.ContainsFunc(ms, func(m *member) bool { return m.id == leader }), fmt.Sprint("leader ", leader)
	})
	return leader
}

// waitCaughtUp waits until member id has applied at least what the leader
// had applied when the wait began, and Status does not call it catching up.
func waitCaughtUp(t *testing.T, a *admin.Client, id uint64) {
	t.Helper()
	var target uint64
	waitFor(t, 30*time.Second, "the leader's applied index", func() (bool, string) {
		l, err := a.Leader(context.Background())
		if err != nil {
			return false, err.Error()
		}
		target = l.Applied
		return true, ""
	})
	waitFor(t, 60*time.Second, fmt.Sprintf("member %d caught up to applied %d", id, target), func() (bool, string) {
		sts, _ := a.Status(context.Background())
		for _, s := range sts {
			if s.Err == nil && s.ID == id {
				return s.Applied >= target && s.Lag != nil && !s.CatchingUp,
					fmt.Sprintf("applied %d lag %v catching up %v", s.Applied, s.Lag, s.CatchingUp)
			}
		}
		return false, "member not answering"
	})
}

// memberIDs returns the ids of the member directory.
func memberIDs(t *testing.T, a *admin.Client) []uint64 {
	t.Helper()
	ms, err := a.MemberList(context.Background())
	if err != nil {
		return nil
	}
	var ids []uint64
	for _, m := range ms.Members {
		ids = append(ids, m.ID)
	}
	return ids
}

// logTail returns the end of m's log, for failure messages.
func (m *member) logTail(n int) string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
