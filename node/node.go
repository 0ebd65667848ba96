// Package node assembles a zraft node from a Config and an application: the
// dragonboat NodeHost running the replicated state machine, the hardened
// ZeroMQ transport clients connect to, the supervised actor tree between
// them, and the HTTP endpoints for metrics, health and status. It is the only
// package that wires concrete types together; cmd/node and the tests use it.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/lni/dragonboat/v4"
	dbconfig "github.com/lni/dragonboat/v4/config"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/lni/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/fsm/raftsm"
	"github.com/zraft/zraft/node/raftnet"
	"github.com/zraft/zraft/supervision"
	"github.com/zraft/zraft/transport"
)

// Node is a running zraft node. Close stops it.
type Node struct {
	cfg      Config
	log      *slog.Logger
	system   *actor.ActorSystem
	root     *actor.PID
	refs     actors.Refs
	nh       *dragonboat.NodeHost
	router   *transport.Router
	work     *actors.Work
	sched    *actors.Scheduler // runs the actors' mailboxes; closed by closeRaft
	raft     *raftAdapter
	cancel   context.CancelFunc
	metrics  *actors.Metrics
	registry *prometheus.Registry
	// inbox and observer are the admission points the actors release;
	// kept for tests that check nothing leaks.
	inbox    *actors.Inbox
	observer *actors.Observer
	http     *http.Server
	httpWG   sync.WaitGroup
	unwatch  func()
	hashes   *hashChecker
	hashWG   sync.WaitGroup
	// fs and nodeHostDir are where dragonboat keeps this member's data;
	// backups are exported there (admin.go, backup.go).
	fs           vfs.FS
	nodeHostDir  string
	snapshotting atomic.Bool
	exports      atomic.Uint64
	// noTransfer skips the leadership transfer of Close: set when the
	// whole cluster stops at once (Cluster.Close).
	noTransfer atomic.Bool
	// dir is the replicated member directory the actors serve hints from;
	// adminMu serializes membership changes and the reconciler (members.go).
	dir     *actors.Directory
	adminMu sync.Mutex
	dirWG   sync.WaitGroup
	// peers maps the directory's member ids to Raft addresses, for the
	// Raft transport's sender check (members added while running).
	peers atomic.Pointer[map[uint64]string]

	closeOnce sync.Once
	closeErr  error
}

type options struct {
	log        *slog.Logger
	faults     *supervision.Faults
	userActors []UserActor
	fs         vfs.FS
}

// Option configures Start.
type Option func(*options)

// WithLogger sets the node's structured logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithFaultInjection installs a fault injector in every actor. Test only: a
// production node never calls it, so no configuration can crash its actors.
func WithFaultInjection(f *supervision.Faults) Option { return func(o *options) { o.faults = f } }

// WithFS runs dragonboat on the given filesystem (tests share one in-memory
// filesystem between restarts of a node). Default: the OS filesystem, or a
// fresh in-memory one when Config.InMemory is set.
func WithFS(fs vfs.FS) Option { return func(o *options) { o.fs = fs } }

// UserActor is an actor an embedding program adds to the node's tree. Name
// must be unique among the node's actors and contain no '/' or '-'.
type UserActor struct {
	Name string
	// Producer builds the actor; it gets the handle it may use to propose
	// commands and read state.
	Producer func(h *Handle) actor.Actor
}

// WithActor adds a user actor to the tree, supervised like the others.
func WithActor(a UserActor) Option {
	return func(o *options) { o.userActors = append(o.userActors, a) }
}

// Handle is what a user actor may use: the raft bridge's PID (send it
// *actors.Propose with fsm.AppCommand bytes, or *actors.Read), and whether
// this node leads.
type Handle struct {
	Raft *actor.PID
	node *Node
}

// IsLeader reports whether this node currently leads its shard.
func (h *Handle) IsLeader() bool {
	id, _, ok := h.node.leader()
	return ok && id == h.node.cfg.ID
}

var quietOnce sync.Once

// clock returns the node's local clock: the wall clock shifted by skew,
// which only tests set (Config.ClockSkew).
func clock(skew time.Duration) func() time.Time {
	if skew == 0 {
		return time.Now
	}
	return func() time.Time { return time.Now().Add(skew) }
}

// Start starts a node serving app (which must not be shared with another
// node) and returns once the node's Raft replica, actors and client listener
// run. The cluster serves clients once a leader is elected.
func Start(ctx context.Context, cfg Config, app fsm.Application, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	n := &Node{cfg: cfg, log: o.log.With("node", cfg.ID), registry: prometheus.NewRegistry()}
	installDependencyLogging(n.log)
	n.metrics = actors.NewMetrics(n.registry)

	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}

	actorLog := slog.New(minLevel{n.log.Handler(), slog.LevelWarn}).With("component", "protoactor")
	// Messages to stopped actors (a timer firing after its session ended, a
	// reply for a restarted actor) are dead letters; protoactor throttles
	// their logging with a timer goroutine that lives one interval, kept
	// short so that Close leaves nothing running for long.
	n.system = actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return actorLog }),
		actor.WithDeadLetterThrottleInterval(50*time.Millisecond),
		actor.WithDeadLetterRequestLogging(false),
	)
	n.unwatch = supervision.Watch(n.system, n.metrics)
	rootName := "node"
	pid := func(name string) *actor.PID { return n.system.NewLocalPID(rootName + "/" + name) }
	n.refs = actors.Refs{Gateway: pid("gateway"), Sessions: pid("sessions"), KeepAlive: pid("keepalive"),
		Raft: pid("raft"), Dispatcher: pid("dispatcher")}
	workCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel

	// The state machine, with the observer that relays to the dispatcher.
	observer := actors.NewObserver(n.system, n.refs.Dispatcher, cfg.MaxInbox)
	fcfg := fsm.DefaultConfig()
	// The capability limits a client can hit are the protocol's (codec
	// limits, answered TooLarge when a CreateSession is decoded); the state
	// machine's own check must never be the tighter one.
	wireLimits := codec.DefaultLimits()
	fcfg.MaxCapabilities, fcfg.MaxCapabilityBytes = wireLimits.MaxCapabilities, wireLimits.MaxString
	fcfg.MaxSessions = cfg.MaxSessions
	fcfg.MaxCachedResponses = cfg.MaxInFlight
	fcfg.MaxPayloadBytes = cfg.MaxFrame
	fcfg.MaxResultBytes = cfg.MaxPayload
	fcfg.MaxServerRequestBytes = cfg.MaxPayload
	fcfg.QuotaBytes = cfg.QuotaBytes
	n.hashes = newHashChecker(n.log, n.registry)
	factory := raftsm.FactoryWith(func(shardID, replicaID uint64) *fsm.Machine {
		m, err := fsm.New(app, fcfg, observer)
		if err != nil {
			// fcfg is validated below before dragonboat can call this.
			panic(err)
		}
		return m
	}, raftsm.Options{HashEvery: cfg.HashCheckEntries, Monitor: n.hashes})
	if err := fcfg.Validate(); err != nil {
		cancel()
		n.system.Shutdown()
		return nil, fmt.Errorf("node: state machine limits: %w", err)
	}

	// The NodeHost is published to the adapter once it runs; until then
	// every call answers ErrUnavailable.
	raft := &raftAdapter{shard: cfg.ShardID, replica: cfg.ID}
	n.raft = raft
	n.work = actors.NewWork(workCtx, raft, cfg.MaxProposals, cfg.ProposalTimeout, n.metrics, n.log)
	n.work.UseClock(clock(cfg.ClockSkew))
	limits := codec.DefaultLimits()
	limits.MaxFrame, limits.MaxPayload = cfg.MaxFrame, cfg.MaxPayload
	members := make([]actors.Member, len(cfg.Members))
	for i, m := range cfg.Members {
		members[i] = actors.Member{ID: m.ID, ClientAddr: m.ClientAddr}
	}
	env := &actors.Env{
		Settings: actors.Settings{
			NodeID: cfg.ID, Members: members,
			KeepAliveInterval: cfg.KeepAliveInterval, KeepAliveFastPath: cfg.KeepAliveFastPath, SessionTimeout: cfg.SessionTimeout,
			ProposalTimeout: cfg.ProposalTimeout, AckBatchInterval: cfg.AckBatchInterval,
			RedeliverInterval: cfg.RedeliverInterval, MaxInFlight: cfg.MaxInFlight,
			MaxProposals: cfg.MaxProposals, SessionCreateRate: cfg.SessionCreateRate,
			MaxSessionsPerSource: cfg.MaxSessionsPerSource, MaxSessionBytes: cfg.MaxSessionBytes,
			MaxCommandBytes: maxCommandBytes(app),
			Limits:          limits, Supervision: supervision.DefaultLimits(),
		},
		Bytes:   actors.NewByteBudget(cfg.MaxProposalBytes),
		Refs:    n.refs,
		Raft:    raft,
		Work:    n.work,
		Metrics: n.metrics,
		Log:     n.log,
		Faults:  o.faults,
		Now:     clock(cfg.ClockSkew),
	}
	// Mailboxes run on resident goroutines, not one new goroutine per
	// activation (docs/architecture.md, Goroutines).
	n.sched = actors.NewScheduler(actors.DefaultResident, actors.DefaultThroughput)
	env.Scheduler = n.sched
	n.dir = &actors.Directory{}
	env.Directory = n.dir
	conns := &connsAdapter{}
	registerProcessMetrics(n.registry, &conns.r)
	registerBudgetMetrics(n.registry, env.Bytes, app, cfg.QuotaBytes)
	env.Conns = conns
	inbox := actors.NewInbox(n.system, env, cfg.MaxInbox, cfg.MaxInboxBytes)
	env.Inbox = inbox
	n.inbox, n.observer = inbox, observer

	handle := &Handle{Raft: n.refs.Raft, node: n}
	rootProps := actor.PropsFromProducer(func() actor.Actor {
		return &rootActor{env: env, inbox: inbox, observer: observer, user: o.userActors, handle: handle}
	}, actor.WithSupervisor(supervision.StrategyDropping(env.Settings.Supervision, func(child *actor.PID, msg any) {
		// A message lost to a panic gives back the admission it held, and
		// whoever waits for its answer gets one (actors.AnswerLost).
		kind := supervision.Kind(child)
		switch kind {
		case "gateway", "sessions":
			inbox.Dropped(msg)
		case "dispatcher":
			observer.Dropped(msg)
		}
		actors.AnswerLost(n.system, env, kind, msg)
	})))
	// The whole tree is spawned before anything outside it (dragonboat's
	// listener and the state machine's observer, then clients) can post
	// to it: protoactor races when a message reaches a mailbox that is
	// still being set up. The root answers only after spawning every child.
	n.root, err = n.system.Root.SpawnNamed(rootProps, rootName)
	if err == nil {
		_, err = n.system.Root.RequestFuture(n.root, &treeReady{}, 10*time.Second).Result()
	}
	if err != nil {
		n.stopActors()
		n.closeRaft()
		return nil, fmt.Errorf("node: spawn actors: %w", err)
	}
	env.TreeUp.Store(true)

	if err := n.startRaft(o, factory); err != nil {
		n.stopActors()
		n.closeRaft()
		return nil, err
	}
	raft.nh.Store(n.nh)
	n.dirWG.Add(1)
	go n.syncDirectory(workCtx)
	if cfg.HashCheckEntries > 0 {
		n.hashWG.Add(1)
		go n.reportHashes(workCtx)
	}

	rcfg := transport.DefaultRouterConfig()
	rcfg.Addr = cfg.self().ClientAddr
	rcfg.MaxFrameSize = cfg.MaxFrame
	rcfg.MaxConns = cfg.MaxConns
	rcfg.MaxConnsPerSource = cfg.MaxConnsPerSource
	rcfg.MaxHandshakes = min(cfg.MaxHandshakes, cfg.MaxConns)
	rcfg.MaxHandshakesPerSource = cfg.MaxHandshakesPerSource
	rcfg.HandshakeTimeout = cfg.HandshakeTimeout
	rcfg.SendQueueBytes = cfg.SendQueueBytes
	rcfg.MaxQueuedBytes = cfg.MaxQueuedBytes
	rcfg.QueueOverdraftBytes = cfg.QueueOverdraftBytes
	rcfg.MaxReadingBytes = cfg.MaxReadingBytes
	rcfg.FrameReadTimeout = cfg.FrameReadTimeout
	rcfg.Poller = cfg.ClientPoller
	rcfg.TLS = tlsCfg
	n.router, err = transport.Listen(rcfg, handler{inbox: inbox})
	if err != nil {
		n.stopActors()
		n.closeRaft()
		return nil, fmt.Errorf("node: listen for clients on %s: %w", rcfg.Addr, err)
	}
	conns.r.Store(n.router)

	if cfg.HTTPAddr != "" {
		if err := n.startHTTP(); err != nil {
			_ = n.Close()
			return nil, err
		}
	}
	n.log.Info("node started", "client_addr", n.router.Addr().String(), "raft_addr", cfg.self().RaftAddr,
		"cluster_id", n.cfg.ClusterID, "peer_tls", cfg.PeerTLS())
	return n, nil
}

func (n *Node) startRaft(o options, factory sm.CreateStateMachineFunc) error {
	cfg := n.cfg
	self := cfg.self()
	nhc := dbconfig.NodeHostConfig{
		NodeHostDir:       filepath.Join(cfg.DataDir, fmt.Sprintf("node-%d", cfg.ID)),
		RTTMillisecond:    uint64(max(cfg.RTT.Milliseconds(), 1)),
		RaftAddress:       self.RaftAddr,
		RaftEventListener: &leaderListener{system: n.system, raft: n.refs.Raft},
		Expert:            dbconfig.ExpertConfig{LogDB: dbconfig.GetSmallMemLogDBConfig()},
	}
	fs := vfs.Default
	switch {
	case o.fs != nil:
		fs = o.fs
		nhc.Expert.FS = o.fs
	case cfg.InMemory:
		fs = vfs.NewMem()
		nhc.Expert.FS = fs
	}
	if cfg.InMemory {
		nhc.Expert.LogDB = dbconfig.GetTinyMemLogDBConfig()
		if cfg.DataDir == "" {
			nhc.NodeHostDir = fmt.Sprintf("/zraft/node-%d", cfg.ID)
		}
	}
	if err := fs.MkdirAll(nhc.NodeHostDir, 0o750); err != nil {
		return fmt.Errorf("node: data dir: %w", err)
	}
	// The cluster id is dragonboat's deployment id: its transport and ours
	// drop messages carrying another, and it refuses to open a node
	// directory written under another.
	did, err := resolveClusterID(fs, nhc.NodeHostDir, &n.cfg)
	if err != nil {
		return err
	}
	nhc.DeploymentID = did
	rnc, err := n.cfg.raftnetConfig()
	if err != nil {
		return err
	}
	rnc.Log = n.log.With("component", "raftnet")
	rnc.Lookup = n.lookupPeer
	rnc.Metrics = raftnet.NewMetrics(n.registry)
	nhc.Expert.TransportFactory = raftnet.NewFactory(rnc)
	if w := n.cfg.insecurePeerWarning(); w != "" {
		n.log.Warn(w, "raft_addr", self.RaftAddr)
	}
	n.fs, n.nodeHostDir = fs, nhc.NodeHostDir
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		return fmt.Errorf("node: start raft: %w", err)
	}
	initial := make(map[uint64]string, len(cfg.Members))
	for _, m := range cfg.Members {
		initial[m.ID] = m.RaftAddr
	}
	if cfg.Join || nh.HasNodeInfo(cfg.ShardID, cfg.ID) {
		// A restart, or the first start after Restore: the membership is
		// the one the data dir records (an imported snapshot's record is
		// kept as a join, which dragonboat accepts only without a list).
		initial = nil
	}
	rc := dbconfig.Config{
		ShardID:            cfg.ShardID,
		ReplicaID:          cfg.ID,
		ElectionRTT:        cfg.ElectionRTT,
		HeartbeatRTT:       cfg.HeartbeatRTT,
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    cfg.SnapshotEntries,
		CompactionOverhead: cfg.SnapshotEntries / 2,
	}
	join := cfg.Join && !nh.HasNodeInfo(cfg.ShardID, cfg.ID)
	if err := nh.StartReplica(initial, join, factory, rc); err != nil {
		nh.Close()
		return fmt.Errorf("node: start replica: %w", err)
	}
	// Assigned only now: a NodeHost that failed to start is closed above
	// and must not be closed again by closeRaft (dragonboat panics).
	n.nh = nh
	return nil
}
