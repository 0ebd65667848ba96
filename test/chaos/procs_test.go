package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zraft/zraft/internal/testnet"
	"github.com/zraft/zraft/node"
	"github.com/zraft/zraft/node/httpapi"
)

// member is one cmd/node process of the cluster. Its ports and data
// directory stay the same across restarts.
type member struct {
	id                             uint64
	raftPort, clientPort, httpPort int
	raftAddr, clientAddr, httpAddr string
	dir                            string
	logPath                        string
	cred                           *syscall.Credential // nil: runs as the test's user
	uid                            int                 // -1 when cred is nil

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	expect  bool // the nemesis is ending this process
	paused  bool // SIGSTOPped
	skew    time.Duration
	running bool
}

// death is a member process that exited without the nemesis ending it.
type death struct {
	id  uint64
	at  time.Time
	err error
}

// procCluster is three cmd/node processes on 127.0.0.1.
type procCluster struct {
	t         testing.TB
	root      string
	clusterID string
	members   []*member
	http      *http.Client

	mu     sync.Mutex
	deaths []death
}

// chaosUsers are the user ids members run under when the test runs as root,
// so that firewall rules can match every socket a member opens.
const chaosUserPrefix = "zraftchaos"

// memberUser returns the credential for member id: its own user (created if
// needed) when running as root, nil otherwise or when the user cannot be
// created (why says so).
func memberUser(id uint64) (cred *syscall.Credential, uid int, why string) {
	if os.Geteuid() != 0 {
		return nil, -1, "not root"
	}
	name := fmt.Sprintf("%s%d", chaosUserPrefix, id)
	u, err := user.Lookup(name)
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--user-group",
			"--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err != nil {
			return nil, -1, fmt.Sprintf("useradd %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
		if u, err = user.Lookup(name); err != nil {
			return nil, -1, err.Error()
		}
	}
	uidN, _ := strconv.Atoi(u.Uid)
	gidN, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uidN), Gid: uint32(gidN)}, uidN, ""
}

// startProcCluster starts three members and waits for a leader. Cleanup
// ends every process (the test's own cleanup checks deaths before that).
func startProcCluster(t testing.TB) *procCluster {
	t.Helper()
	root, err := os.MkdirTemp("", "zraft-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	ports, err := testnet.FreePorts(9)
	if err != nil {
		t.Fatal(err)
	}
	c := &procCluster{t: t, root: root, clusterID: node.NewClusterID(), http: &http.Client{
		Timeout:   300 * time.Millisecond,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
	for i := 0; i < 3; i++ {
		m := &member{id: uint64(i + 1), raftPort: ports[3*i], clientPort: ports[3*i+1], httpPort: ports[3*i+2], uid: -1}
		m.raftAddr = fmt.Sprintf("127.0.0.1:%d", m.raftPort)
		m.clientAddr = fmt.Sprintf("127.0.0.1:%d", m.clientPort)
		m.httpAddr = fmt.Sprintf("127.0.0.1:%d", m.httpPort)
		m.dir = filepath.Join(root, fmt.Sprintf("m%d", m.id))
		m.logPath = filepath.Join(root, fmt.Sprintf("m%d.log", m.id))
		if err := os.MkdirAll(m.dir, 0o750); err != nil {
			t.Fatal(err)
		}
		var why string
		m.cred, m.uid, why = memberUser(m.id)
		if m.cred != nil {
			if err := os.Chown(m.dir, int(m.cred.Uid), int(m.cred.Gid)); err != nil {
				t.Fatal(err)
			}
		} else if i == 0 {
			t.Logf("members run under the test's user (%s): partitions match ports only", why)
		}
		c.members = append(c.members, m)
	}
	t.Cleanup(func() {
		c.stopAll()
		if *flagKeep || t.Failed() {
			t.Logf("process cluster data and member logs kept in %s", root)
			return
		}
		os.RemoveAll(root)
	})
	for _, m := range c.members {
		if err := c.start(m, 0); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.waitLeader(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *procCluster) endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientAddr
	}
	return out
}

func (c *procCluster) membersFlag() string {
	parts := make([]string, len(c.members))
	for i, m := range c.members {
		parts[i] = fmt.Sprintf("%d=%s/%s", m.id, m.raftAddr, m.clientAddr)
	}
	return strings.Join(parts, ",")
}

// start runs member m with its clock shifted by skew.
func (c *procCluster) start(m *member, skew time.Duration) error {
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
	fmt.Fprintf(logf, "=== %s chaos: start member %d (clock skew %v)\n", time.Now().Format(tsFormat), m.id, skew)
	args := []string{"--id", fmt.Sprint(m.id), "--members", c.membersFlag(), "--cluster-id", c.clusterID, "--data", m.dir,
		"--http", m.httpAddr, "--log-level", "warn"}
	if skew != 0 {
		args = append(args, "--debug-clock-skew", skew.String())
	}
	cmd := exec.Command(nodeBin, args...)
	cmd.Dir = m.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a test binary that dies takes its members with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: m.cred}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start member %d: %w", m.id, err)
	}
	m.cmd, m.exited, m.expect, m.paused, m.skew, m.running = cmd, make(chan struct{}), false, false, skew, true
	exited := m.exited
	go func() {
		err := cmd.Wait()
		m.mu.Lock()
		expected := m.expect
		m.running = false
		m.mu.Unlock()
		if !expected {
			c.mu.Lock()
			c.deaths = append(c.deaths, death{id: m.id, at: time.Now(), err: err})
			c.mu.Unlock()
		}
		close(exited)
	}()
	return nil
}

// signal sends sig to m's process; ending says the process is expected to
// exit from it. It returns the channel closed when the process has exited.
func (c *procCluster) signal(m *member, sig syscall.Signal, ending bool) (<-chan struct{}, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.running {
		return nil, fmt.Errorf("member %d is not running", m.id)
	}
	if ending {
		m.expect = true
	}
	switch sig {
	case syscall.SIGSTOP:
		m.paused = true
	case syscall.SIGCONT:
		m.paused = false
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		return nil, fmt.Errorf("signal %v to member %d: %w", sig, m.id, err)
	}
	return m.exited, nil
}

// kill ends m with SIGKILL and waits until it is gone.
func (c *procCluster) kill(m *member) error {
	done, err := c.signal(m, syscall.SIGKILL, true)
	if err != nil {
		return err
	}
	<-done
	return nil
}

// terminate ends m gracefully (SIGTERM), or with SIGKILL after 15 s.
func (c *procCluster) terminate(m *member) error {
	m.mu.Lock()
	paused := m.paused
	m.mu.Unlock()
	if paused {
		if _, err := c.signal(m, syscall.SIGCONT, false); err != nil {
			return err
		}
	}
	done, err := c.signal(m, syscall.SIGTERM, true)
	if err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(15 * time.Second):
		_, _ = c.signal(m, syscall.SIGKILL, true)
		<-done
		return fmt.Errorf("member %d did not stop within 15 s of SIGTERM", m.id)
	}
}

// stopAll ends every running member (continuing paused ones first).
func (c *procCluster) stopAll() {
	for _, m := range c.members {
		m.mu.Lock()
		running := m.running
		m.mu.Unlock()
		if running {
			if err := c.terminate(m); err != nil {
				c.t.Logf("stop: %v", err)
			}
		}
	}
}

func (c *procCluster) takeDeaths() []death {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.deaths
	c.deaths = nil
	return d
}

// status reads m's /status; ok is false when m does not answer in time.
func (c *procCluster) status(m *member) (httpapi.Status, bool) {
	var s httpapi.Status
	resp, err := c.http.Get("http://" + m.httpAddr + "/status")
	if err != nil {
		return s, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || json.Unmarshal(b, &s) != nil {
		return s, false
	}
	return s, true
}

func (c *procCluster) member(id uint64) *member {
	for _, m := range c.members {
		if m.id == id {
			return m
		}
	}
	return nil
}

// waitLeader waits until every member not in exclude answers /status and
// all name the same leader, itself not excluded.
func (c *procCluster) waitLeader(ctx context.Context, exclude *member) (*member, error) {
	for {
		var leader uint64
		agree := true
		for _, m := range c.members {
			if m == exclude {
				continue
			}
			s, ok := c.status(m)
			if !ok || s.LeaderID == 0 || (leader != 0 && s.LeaderID != leader) {
				agree = false
				break
			}
			leader = s.LeaderID
		}
		if agree && leader != 0 && (exclude == nil || leader != exclude.id) {
			return c.member(leader), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no agreed leader among the healthy members: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitCaughtUp waits until m has applied at least what the leader had
// applied when the wait began.
func (c *procCluster) waitCaughtUp(ctx context.Context, m *member) error {
	var target uint64
	for target == 0 {
		l, err := c.waitLeader(ctx, nil)
		if err != nil {
			return err
		}
		if s, ok := c.status(l); ok {
			target = s.Applied
		}
	}
	for {
		if s, ok := c.status(m); ok && s.Applied >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("member %d did not catch up to applied %d: %w", m.id, target, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitConverged waits until every member answers with the same applied
// count, session count and cluster time, twice in a row 200 ms apart (no
// entry applied in between).
func (c *procCluster) waitConverged(ctx context.Context) ([]httpapi.Status, error) {
	var prev []httpapi.Status
	for {
		var cur []httpapi.Status
		same := true
		for _, m := range c.members {
			s, ok := c.status(m)
			if !ok {
				same = false
				break
			}
			cur = append(cur, s)
			if s.Applied != cur[0].Applied || s.Sessions != cur[0].Sessions || s.Clock != cur[0].Clock {
				same = false
			}
		}
		if same && prev != nil && prev[0].Applied == cur[0].Applied {
			return cur, nil
		}
		if !same {
			cur = nil
		}
		prev = cur
		select {
		case <-ctx.Done():
			return cur, fmt.Errorf("members did not converge: %w (last: %+v)", ctx.Err(), cur)
		case <-time.After(200 * time.Millisecond):
		}
	}
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

var errSkip = errors.New("chaos: fault unavailable here")
