package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lni/vfs"

	"github.com/zraft/zraft/fsm"
)

// Cluster is several nodes of one cluster running in this process: what
// `cmd/node --dev` starts, and what the integration tests drive.
type Cluster struct {
	base   Config
	newApp func() fsm.Application
	opts   []Option

	mu    sync.Mutex
	nodes map[uint64]*Node // nil while a node is stopped
	// fs keeps each in-memory member's filesystem across restarts, so that
	// a restarted member keeps its log and votes as a real one would.
	fs map[uint64]vfs.FS
	// joined are the members added while the cluster ran (Join).
	joined map[uint64]bool
}

// pickedPorts holds the ports LocalMembers handed out in this process.
var pickedPorts sync.Map

// LocalMembers returns n members on 127.0.0.1. With raftBase and clientBase
// non-zero, member i (from 1) uses ports raftBase+i-1 and clientBase+i-1;
// with zero, ports are picked at random below the ephemeral range, each
// free when picked and never handed out twice by this process.
func LocalMembers(n, raftBase, clientBase int) ([]Member, error) {
	// Every chosen port stays bound until all are chosen: a port released
	// at once could be handed out again for the next member (dragonboat
	// then refuses the duplicate address).
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	// Ports come from below the kernel's ephemeral range (32768 and up by
	// default): a port the system handed out for listening could be taken
	// by an outgoing connection between the check and the member's bind.
	// A port is never handed out twice by this process (a caller binds it
	// later, and another call in between must not choose it again).
	pick := func() (int, error) {
		for range 1000 {
			p := 10000 + rand.IntN(22000)
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				continue
			}
			if _, used := pickedPorts.LoadOrStore(p, true); used {
				_ = l.Close()
				continue
			}
			held = append(held, l)
			return p, nil
		}
		return 0, fmt.Errorf("node: no free port found on 127.0.0.1 between 10000 and 32000")
	}
	ms := make([]Member, n)
	for i := range ms {
		ms[i].ID = uint64(i + 1)
		rp, cp := raftBase+i, clientBase+i
		var err error
		if raftBase == 0 {
			if rp, err = pick(); err != nil {
				return nil, err
			}
		}
		if clientBase == 0 {
			if cp, err = pick(); err != nil {
				return nil, err
			}
		}
		ms[i].RaftAddr = fmt.Sprintf("127.0.0.1:%d", rp)
		ms[i].ClientAddr = fmt.Sprintf("127.0.0.1:%d", cp)
	}
	return ms, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("node: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartCluster starts every member of base.Members in this process (base.ID
// is ignored), each with a fresh application from newApp, and waits until a
// leader is elected or ctx ends.
func StartCluster(ctx context.Context, base Config, newApp func() fsm.Application, opts ...Option) (*Cluster, error) {
	if base.ClusterID == "" {
		// All members are here: they share one id, the one a member's
		// data dir holds from an earlier run, else a new one.
		id, err := storedClusterID(base)
		if err != nil {
			return nil, err
		}
		if id == "" {
			id = NewClusterID()
		}
		base.ClusterID = id
	}
	c := &Cluster{base: base, newApp: newApp, opts: opts, nodes: make(map[uint64]*Node), fs: make(map[uint64]vfs.FS)}
	for _, m := range base.Members {
		if err := c.Start(ctx, m.ID); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	if _, err := c.WaitLeader(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// Start (re)starts member id. A restarted member keeps its data directory
// (or, in memory, the filesystem passed with WithFS) and catches up.
func (c *Cluster) Start(ctx context.Context, id uint64) error {
	c.mu.Lock()
	cfg := c.base
	cfg.Members = slices.Clone(c.base.Members)
	cfg.Join = c.joined[id]
	c.mu.Unlock()
	cfg.ID = id
	if cfg.HTTPAddr != "" {
		// One HTTP port per member: the base port plus the member's index.
		host, port, err := net.SplitHostPort(cfg.HTTPAddr)
		if err == nil {
			var p int
			_, _ = fmt.Sscanf(port, "%d", &p)
			cfg.HTTPAddr = net.JoinHostPort(host, fmt.Sprint(p+int(id)-1))
		}
	}
	opts := c.opts
	if cfg.InMemory {
		c.mu.Lock()
		if c.fs[id] == nil {
			c.fs[id] = vfs.NewMem()
		}
		opts = append(append([]Option(nil), opts...), WithFS(c.fs[id]))
		c.mu.Unlock()
	}
	n, err := Start(ctx, cfg, c.newApp(), opts...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return nil
}

// Join starts m, a member added while the cluster runs (add it to the
// membership first: Node.AddMember on the leader), as a joining member on
// an empty data dir; it catches up from the leader.
func (c *Cluster) Join(ctx context.Context, m Member) error {
	c.mu.Lock()
	if c.joined == nil {
		c.joined = map[uint64]bool{}
	}
	c.joined[m.ID] = true
	c.base.Members = append(c.base.Members, m)
	c.mu.Unlock()
	return c.Start(ctx, m.ID)
}

// storedClusterID returns the cluster id a member's on-disk data dir holds,
// or "".
func storedClusterID(base Config) (string, error) {
	if base.InMemory || base.DataDir == "" {
		return "", nil
	}
	for _, m := range base.Members {
		id, err := readClusterID(vfs.Default, filepath.Join(base.DataDir, fmt.Sprintf("node-%d", m.ID)))
		if err != nil || id != "" {
			return id, err
		}
	}
	return "", nil
}

// ClusterID returns the id the members share.
func (c *Cluster) ClusterID() string { return c.base.ClusterID }

// Stop closes member id (gracefully) and keeps its slot for Start.
func (c *Cluster) Stop(id uint64) error {
	c.mu.Lock()
	n := c.nodes[id]
	c.nodes[id] = nil
	c.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Close()
}

// Node returns member id, or nil while it is stopped.
func (c *Cluster) Node(id uint64) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// Nodes returns the running members in id order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, m := range c.base.Members {
		if n := c.nodes[m.ID]; n != nil {
			out = append(out, n)
		}
	}
	return out
}

// Endpoints returns every member's client address.
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.base.Members))
	for i, m := range c.base.Members {
		out[i] = m.ClientAddr
	}
	return out
}

// Leader returns the running node that leads, or nil.
func (c *Cluster) Leader() *Node {
	for _, n := range c.Nodes() {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

// WaitLeader waits until a running node leads and every running node agrees.
func (c *Cluster) WaitLeader(ctx context.Context) (*Node, error) {
	for {
		if l := c.Leader(); l != nil {
			agree := true
			for _, n := range c.Nodes() {
				if id, _, ok := n.Leader(); !ok || id != l.ID() {
					agree = false
				}
			}
			if agree {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node: no leader elected: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close stops every running member, all at once: the whole cluster goes
// away, so no member hands leadership to another about to stop (that made
// a dev cluster take seconds to stop); clients are still told.
func (c *Cluster) Close() error {
	c.mu.Lock()
	var running []*Node
	for _, m := range c.base.Members {
		if n := c.nodes[m.ID]; n != nil {
			running = append(running, n)
			c.nodes[m.ID] = nil
		}
	}
	c.mu.Unlock()
	errs := make([]error, len(running))
	var wg sync.WaitGroup
	for i, n := range running {
		n.noTransfer.Store(true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Close()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// localAttempts bounds how often StartLocalCluster retries with new ports.
const localAttempts = 5

// StartLocalCluster starts an n-member cluster on 127.0.0.1 with ports the OS
// chooses (tests, benchmarks). A chosen port can be taken by another socket
// before a member binds it; the start is then retried with new ports, at
// most five times. base.Members is replaced; setup, when not nil, adjusts
// each attempt's config (for example to choose HTTP ports) and may fail.
func StartLocalCluster(ctx context.Context, n int, base Config, setup func(*Config) error,
	newApp func() fsm.Application, opts ...Option) (*Cluster, error) {
	var err error
	for attempt := 0; attempt < localAttempts; attempt++ {
		cfg := base
		if cfg.Members, err = LocalMembers(n, 0, 0); err != nil {
			return nil, err
		}
		if setup != nil {
			if err = setup(&cfg); err != nil {
				return nil, err
			}
		}
		var c *Cluster
		c, err = StartCluster(ctx, cfg, newApp, opts...)
		if err == nil || !IsAddrInUse(err) {
			return c, err
		}
	}
	return nil, err
}

// IsAddrInUse reports whether err is a failure to bind a port that is taken.
// dragonboat does not always wrap the system error, so its text is checked
// too.
func IsAddrInUse(err error) bool {
	return err != nil && (errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use"))
}
