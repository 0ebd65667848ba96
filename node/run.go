package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/raftio"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/node/httpapi"
	"github.com/zraft/zraft/transport"
)

// rootActor is the root of the node's tree: it spawns the fixed actors and
// the user actors as its children and supervises them (one-for-one restarts
// within supervision limits).
type rootActor struct {
	env      *actors.Env
	inbox    *actors.Inbox
	observer *actors.Observer
	user     []UserActor
	handle   *Handle
	// producers are the children by name, so that a child its supervisor
	// stopped (past its restart limit) can be started afresh.
	producers map[string]actor.Producer
	stopping  bool
}

// treeReady is answered by the root once every child is spawned.
type treeReady struct{}

func (r *rootActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *treeReady:
		c.Respond(true)
		return
	case *actor.Stopping:
		r.stopping = true
		return
	case *actor.Terminated:
		r.childStopped(c, m.Who)
		return
	case *actor.Started:
	default:
		return
	}
	r.producers = map[string]actor.Producer{}
	spawn := func(name string, p actor.Producer) {
		r.producers[name] = p
		if _, err := c.SpawnNamed(r.env.Props(name, p), name); err != nil {
			panic(fmt.Sprintf("node: spawn %s: %v", name, err))
		}
	}
	// The bridge first: the others ask it for the leader when they start.
	spawn("raft", actors.NewRaft(r.env))
	spawn("dispatcher", actors.NewDispatcher(r.env, r.observer))
	spawn("keepalive", actors.NewKeepAlive(r.env))
	spawn("sessions", actors.NewSessions(r.env))
	spawn("gateway", actors.NewGateway(r.env, r.inbox))
	for _, u := range r.user {
		u := u
		spawn(u.Name, func() actor.Actor { return u.Producer(r.handle) })
	}
}

// childStopped starts afresh a top-level actor that its supervisor stopped
// because it failed too often: the node keeps serving (the actor's state is
// rebuilt as after any restart) and the event is logged and counted.
func (r *rootActor) childStopped(c actor.Context, pid *actor.PID) {
	if r.stopping {
		return
	}
	name := pid.Id[strings.LastIndexByte(pid.Id, '/')+1:]
	p, ok := r.producers[name]
	if !ok {
		return
	}
	r.env.Log.Error("actor stopped after too many restarts; starting it afresh", "actor", name)
	r.env.Metrics.Restarts.WithLabelValues(name, "Respawned").Inc()
	// The transport's goroutines and the state machine post to these
	// actors from outside the tree: they are held off while the actor is
	// spawned (protoactor races when a message reaches a mailbox still
	// being set up, and such a message can be lost), and the admission
	// counters, released by the actor that handles each message, are
	// reconciled: what the stopped actor never handled is given back.
	var resume func()
	switch name {
	case "gateway", "sessions":
		resume = r.inbox.Pause()
		defer resume()
		defer r.inbox.Reconcile()
	case "dispatcher":
		resume = r.observer.Pause()
		defer resume()
		defer r.observer.Reconcile()
	}
	if _, err := c.SpawnNamed(r.env.Props(name, p), name); err != nil {
		r.env.Log.Error("respawn failed", "actor", name, "err", err)
	}
}

// handler adapts the transport's callbacks to the inbox.
type handler struct{ inbox *actors.Inbox }

func (h handler) Opened(id transport.ConnID, remote net.Addr) {
	h.inbox.Opened(actors.ConnID(id), remote)
}
func (h handler) Received(id transport.ConnID, frame []byte) {
	h.inbox.Received(actors.ConnID(id), frame)
}
func (h handler) Closed(id transport.ConnID, err error) { h.inbox.Closed(actors.ConnID(id), err) }

// connsAdapter lets actors send through the router, which is created after
// the actors (so that the first frame finds the gateway running).
type connsAdapter struct {
	r atomic.Pointer[transport.Router]
}

func (a *connsAdapter) Send(conn actors.ConnID, frame []byte) error {
	r := a.r.Load()
	if r == nil {
		return transport.ErrUnknownConn
	}
	return r.Send(transport.ConnID(conn), frame)
}

// SendNow writes a small answer on the caller's goroutine when the
// connection is idle (transport.Router.SendNow).
func (a *connsAdapter) SendNow(conn actors.ConnID, frame []byte) error {
	r := a.r.Load()
	if r == nil {
		return transport.ErrUnknownConn
	}
	return r.SendNow(transport.ConnID(conn), frame)
}

func (a *connsAdapter) CloseConn(conn actors.ConnID) error {
	r := a.r.Load()
	if r == nil {
		return transport.ErrUnknownConn
	}
	return r.CloseConn(transport.ConnID(conn))
}

// raftAdapter implements actors.Raft on a NodeHost, mapping dragonboat's
// errors to the three classes the actors act on.
type raftAdapter struct {
	nh      atomic.Pointer[dragonboat.NodeHost] // nil until the NodeHost runs
	shard   uint64
	replica uint64 // this node's member id
}

// errNotStarted answers calls made before the NodeHost runs.
var errNotStarted = fmt.Errorf("%w: raft not started", actors.ErrUnavailable)

func (a *raftAdapter) Propose(ctx context.Context, cmd []byte) (uint64, []byte, error) {
	nh := a.nh.Load()
	if nh == nil {
		return 0, nil, errNotStarted
	}
	r, err := nh.SyncPropose(ctx, nh.GetNoOPSession(a.shard), cmd)
	if err != nil {
		return 0, nil, mapRaftErr(err)
	}
	return r.Value, r.Data, nil
}

// Start queues cmd with dragonboat's asynchronous Propose, which returns
// once the entry is in the node's proposal queue: entries queued one after
// another enter the log in that order within a term.
func (a *raftAdapter) Start(ctx context.Context, cmd []byte) (actors.Proposal, error) {
	nh := a.nh.Load()
	if nh == nil {
		return nil, errNotStarted
	}
	d, ok := ctx.Deadline()
	if !ok {
		return nil, fmt.Errorf("%w: proposal without a deadline", actors.ErrUnavailable)
	}
	timeout := time.Until(d)
	if timeout <= 0 {
		return nil, mapRaftErr(context.DeadlineExceeded)
	}
	rs, err := nh.Propose(nh.GetNoOPSession(a.shard), cmd, timeout)
	if err != nil {
		return nil, mapRaftErr(err)
	}
	return proposal{rs: rs}, nil
}

// proposal is one entry queued by raftAdapter.Start.
type proposal struct{ rs *dragonboat.RequestState }

// Wait waits as dragonboat's SyncPropose does, and like it releases the
// request state only after the entry completed: one that has not may still
// be referenced by the engine.
func (p proposal) Wait(ctx context.Context) (uint64, []byte, error) {
	select {
	case r := <-p.rs.AppliedC():
		if !r.Completed() {
			if r.Rejected() {
				return 0, nil, mapRaftErr(dragonboat.ErrRejected)
			}
			return 0, nil, mapRaftErr(readIndexErr(r))
		}
		res := r.GetResult()
		p.rs.Release()
		return res.Value, res.Data, nil
	case <-ctx.Done():
		return 0, nil, mapRaftErr(ctx.Err())
	}
}

func (a *raftAdapter) Read(ctx context.Context, q any) (any, error) {
	nh := a.nh.Load()
	if nh == nil {
		return nil, errNotStarted
	}
	// The same ReadIndex round as ReadBatch, so a leader elected a moment
	// ago (or just restored) waits until it may serve instead of answering
	// "shard is not ready".
	rs, err := a.readIndex(ctx, nh)
	if err != nil {
		return nil, mapRaftErr(err)
	}
	res, err := nh.ReadLocalNode(rs, q)
	rs.Release()
	if err != nil && isRaftErr(err) {
		return nil, mapRaftErr(err)
	}
	return res, err
}

func (a *raftAdapter) ReadBatch(ctx context.Context, qs []any) ([]any, []error, error) {
	nh := a.nh.Load()
	if nh == nil {
		return nil, nil, errNotStarted
	}
	rs, err := a.readIndex(ctx, nh)
	if err != nil {
		return nil, nil, mapRaftErr(err)
	}
	results, errs := make([]any, len(qs)), make([]error, len(qs))
	for i, q := range qs {
		results[i], errs[i] = nh.ReadLocalNode(rs, q)
		if errs[i] != nil && isRaftErr(errs[i]) {
			errs[i] = mapRaftErr(errs[i])
		}
	}
	rs.Release()
	return results, errs, nil
}

// notReadyPause is how long a ReadIndex round waits before it is asked
// again after the shard said it is not ready.
const notReadyPause = 5 * time.Millisecond

// readIndex runs one completed ReadIndex round. A leader that was just
// elected drops ReadIndex requests ("shard is not ready") until it has
// committed an entry of its term, which takes one round trip; the round is
// asked again until ctx ends, so a client sent to the new leader by a hint
// is served instead of being told the cluster is unavailable.
func (a *raftAdapter) readIndex(ctx context.Context, nh *dragonboat.NodeHost) (*dragonboat.RequestState, error) {
	for {
		timeout := time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		rs, err := nh.ReadIndex(a.shard, timeout)
		if err == nil {
			// Released only after a completed round, as dragonboat's own
			// SyncRead does: an unfinished request may still be
			// referenced by the engine.
			select {
			case r := <-rs.ResultC():
				if r.Completed() {
					return rs, nil
				}
				err = readIndexErr(r)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if !errors.Is(err, dragonboat.ErrShardNotReady) {
			return nil, err
		}
		if id, _, ok, lerr := nh.GetLeaderID(a.shard); lerr != nil || !ok || id != a.replica {
			// Not the leader: the caller's answer (with the right hint)
			// comes from the directory, not from waiting here.
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(notReadyPause):
		}
	}
}

// readIndexErr names why a ReadIndex round did not complete.
func readIndexErr(r dragonboat.RequestResult) error {
	switch {
	case r.Timeout():
		return dragonboat.ErrTimeout
	case r.Terminated():
		return dragonboat.ErrShardClosed
	case r.Dropped():
		return dragonboat.ErrShardNotReady
	case r.Aborted():
		return dragonboat.ErrAborted
	default:
		return dragonboat.ErrRejected
	}
}

func (a *raftAdapter) StaleRead(q any) (any, error) {
	nh := a.nh.Load()
	if nh == nil {
		return nil, errNotStarted
	}
	res, err := nh.StaleRead(a.shard, q)
	if err != nil && isRaftErr(err) {
		return nil, mapRaftErr(err)
	}
	return res, err
}

func (a *raftAdapter) TransferLeadership(target uint64) error {
	nh := a.nh.Load()
	if nh == nil {
		return errNotStarted
	}
	return nh.RequestLeaderTransfer(a.shard, target)
}

func (a *raftAdapter) Leader() (uint64, uint64, bool) {
	nh := a.nh.Load()
	if nh == nil {
		return 0, 0, false
	}
	id, term, ok, err := nh.GetLeaderID(a.shard)
	return id, term, ok && err == nil
}

func isRaftErr(err error) bool {
	return dragonboat.IsTempError(err) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || errors.Is(err, dragonboat.ErrShardNotFound) ||
		errors.Is(err, dragonboat.ErrCanceled) || errors.Is(err, dragonboat.ErrRejected)
}

func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, dragonboat.ErrSystemBusy):
		return fmt.Errorf("%w: %v", actors.ErrOverloaded, err)
	case errors.Is(err, dragonboat.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %v", actors.ErrOutcomeUnknown, err)
	default:
		return fmt.Errorf("%w: %v", actors.ErrUnavailable, err)
	}
}

// leaderListener relays dragonboat's leader updates to the raft bridge. It
// runs on a dragonboat goroutine and only posts a message.
type leaderListener struct {
	system *actor.ActorSystem
	raft   *actor.PID
}

func (l *leaderListener) LeaderUpdated(info raftio.LeaderInfo) {
	l.system.Root.Send(l.raft, &actors.LeaderUpdated{LeaderID: info.LeaderID, Term: info.Term})
}

// leader is safe from any goroutine, also while the node starts or stops.
func (n *Node) leader() (uint64, uint64, bool) { return n.raft.Leader() }

// ClientAddr returns the address clients connect to.
func (n *Node) ClientAddr() string { return n.router.Addr().String() }

// ID returns the node's member id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Leader returns the current leader's id and term, and whether one is known.
func (n *Node) Leader() (id, term uint64, ok bool) { return n.leader() }

// IsLeader reports whether this node leads.
func (n *Node) IsLeader() bool {
	id, _, ok := n.leader()
	return ok && id == n.cfg.ID
}

// TransferLeadership asks dragonboat to hand leadership to target. On the
// leader it first hands over liveness: the keepalive actor records every
// session heard from since its last record (actors.RecordNow), waiting at
// most the proposal timeout, because Raft takes no proposal while the
// transfer is under way and the new leader judges sessions by the records
// in the log.
func (n *Node) TransferLeadership(target uint64) error {
	if n.IsLeader() {
		f := n.system.Root.RequestFuture(n.refs.KeepAlive, &actors.RecordNow{}, n.cfg.ProposalTimeout)
		if r, err := f.Result(); err != nil {
			n.log.Warn("liveness not recorded before leader transfer", "err", err)
		} else if rec, ok := r.(*actors.RecordedNow); ok && rec.Err != nil {
			n.log.Warn("liveness not recorded before leader transfer", "sessions", rec.Sessions, "err", rec.Err)
		}
	}
	return n.raft.TransferLeadership(target)
}

// Read performs a linearizable read of an fsm query value (fsm.StatsQuery,
// fsm.SessionsQuery, fsm.HashQuery, or []byte for the application). After
// Close it returns an error matching actors.ErrUnavailable.
func (n *Node) Read(ctx context.Context, q any) (any, error) { return n.raft.Read(ctx, q) }

// StaleRead reads this replica's applied state without a ReadIndex round.
func (n *Node) StaleRead(q any) (any, error) { return n.raft.StaleRead(q) }

// Restart asks the supervisor to restart the actor with the given name
// ("gateway", "sessions", "keepalive", "raft", "dispatcher" or a user
// actor's). For operations and tests; nothing acknowledged is lost.
func (n *Node) Restart(name string) {
	n.system.Root.Send(n.system.NewLocalPID("node/"+name), &actor.Restart{})
}

// Status returns the node's view of the cluster. Session counts come from
// this replica's applied state.
func (n *Node) Status() httpapi.Status {
	s := httpapi.Status{ID: n.cfg.ID, Role: "follower", Members: n.statusMembers()}
	if id, term, ok := n.leader(); ok {
		s.LeaderID, s.Term = id, term
		if id == n.cfg.ID {
			s.Role = "leader"
		}
	} else {
		s.Role = "unavailable"
	}
	if st, err := n.StaleRead(fsm.StatsQuery{}); err == nil {
		stats := st.(fsm.Stats)
		s.Sessions, s.Clock, s.Applied = stats.Sessions, stats.Clock.UnixNano(), stats.Applied
	}
	if n.cfg.HashCheckEntries > 0 {
		s.HashCheck = n.hashes.status()
	}
	return s
}

func (n *Node) startHTTP() error {
	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("node: http listen %s: %w", n.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if _, _, ok := n.leader(); !ok {
			http.Error(w, "no leader known", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(n.Status())
	})
	mux.HandleFunc("/sessions", n.serveSessions)
	mux.Handle("/admin/", n.adminMux())
	if n.cfg.Pprof {
		pp := http.NewServeMux()
		pp.HandleFunc("/debug/pprof/", pprof.Index)
		pp.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pp.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pp.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pp.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", n.adminAuth(pp))
	}
	ln, handler, err := n.cfg.httpTLS(ln, mux)
	if err != nil {
		_ = ln.Close()
		return err
	}
	n.http = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second,
		// net/http's own errors are mostly failed TLS handshakes, which
		// scanners cause all day: debug level.
		ErrorLog: slog.NewLogLogger(n.log.With("component", "http").Handler(), slog.LevelDebug)}
	n.httpWG.Add(1)
	go func() {
		defer n.httpWG.Done()
		_ = n.http.Serve(ln)
	}()
	return nil
}

// serveSessions lists live sessions in id order, read linearizably:
// GET /sessions?after=<hex id>&limit=<n> (limit default and at most 10,000).
func (n *Node) serveSessions(w http.ResponseWriter, r *http.Request) {
	q := fsm.SessionsQuery{Limit: httpapi.MaxSessionsPage}
	if a := r.URL.Query().Get("after"); a != "" {
		b, err := hex.DecodeString(a)
		if err != nil || len(b) != len(q.After) {
			http.Error(w, "after: want a 32-digit hex session id", http.StatusBadRequest)
			return
		}
		copy(q.After[:], b)
	}
	if l := r.URL.Query().Get("limit"); l != "" {
		v, err := strconv.Atoi(l)
		if err != nil || v <= 0 || v > httpapi.MaxSessionsPage {
			http.Error(w, "limit: want 1 to 10000", http.StatusBadRequest)
			return
		}
		q.Limit = v
	}
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.ProposalTimeout)
	defer cancel()
	res, err := n.Read(ctx, q)
	if err != nil {
		http.Error(w, "read sessions: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	infos := res.([]fsm.SessionInfo)
	out := make([]httpapi.Session, len(infos))
	for i, s := range infos {
		v := httpapi.Session{ID: s.ID.String(), TimeoutMS: s.Timeout.Milliseconds(), OpenedAtNS: s.OpenedAt.UnixNano(),
			LivenessNS: s.Liveness.UnixNano(), Watermark: s.Watermark, CachedResponses: s.CachedResponses,
			PendingServerRequests: s.PendingServerRequests}
		if len(s.Capabilities) > 0 {
			v.Capabilities = make(map[string]string, len(s.Capabilities))
			for _, c := range s.Capabilities {
				v.Capabilities[c.Name] = c.Value
			}
		}
		out[i] = v
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// HTTPAddr returns the address of the metrics/status endpoint, or "".
func (n *Node) HTTPAddr() string {
	if n.http == nil {
		return ""
	}
	return n.cfg.HTTPAddr
}

// Close shuts the node down gracefully: if it leads, leadership goes to
// another member first; connected clients are told (SessionClosed with
// ShuttingDown and the new leader's hint); then the client listener, the
// actors, the Raft replica and the HTTP server stop, and Close waits for
// every goroutine the node started.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	deadline := time.Now().Add(n.cfg.ShutdownGrace)
	hint := actors.Member{}
	if n.root != nil {
		// From here on, clients that lose their binding because leadership
		// moves away are told ShuttingDown with the new leader's hint (not
		// NotLeader or ClusterUnavailable): the directory must know before
		// leadership is transferred.
		_, _ = n.system.Root.RequestFuture(n.refs.Sessions, &actors.Drain{}, time.Second).Result()
	}
	if n.IsLeader() && !n.noTransfer.Load() {
		target := uint64(0)
		for _, m := range n.Directory() {
			if m.ID != n.cfg.ID {
				target = m.ID
				break
			}
		}
		// dragonboat's transfer is best effort: it is dropped when the
		// target does not catch up within an election timeout, so ask
		// again until leadership moves or the grace period ends.
		var asked time.Time
		for target != 0 && time.Now().Before(deadline) {
			if id, _, ok := n.leader(); ok && id != n.cfg.ID {
				break
			}
			if time.Since(asked) > 500*time.Millisecond {
				_ = n.TransferLeadership(target)
				asked = time.Now()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if id, _, ok := n.leader(); ok && id != n.cfg.ID {
		for _, m := range n.Directory() {
			if m.ID == id {
				hint = actors.Member{ID: m.ID, ClientAddr: m.ClientAddr}
			}
		}
	}
	if n.root != nil {
		_, _ = n.system.Root.RequestFuture(n.refs.Sessions, &actors.Shutdown{Hint: hint}, time.Until(deadline)+time.Second).Result()
	}
	var errs []error
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		errs = append(errs, n.http.Shutdown(ctx))
		cancel()
		n.httpWG.Wait()
	}
	if n.router != nil {
		errs = append(errs, n.router.Close())
	}
	n.stopActors()
	n.closeRaft()
	return errors.Join(errs...)
}

func (n *Node) stopActors() {
	if n.root != nil {
		_ = n.system.Root.PoisonFuture(n.root).Wait()
		n.root = nil
	}
}

func (n *Node) closeRaft() {
	n.cancel()
	if n.work != nil {
		n.work.Wait()
	}
	n.hashWG.Wait()
	n.dirWG.Wait()
	if n.raft != nil {
		n.raft.nh.Store(nil) // later calls answer ErrUnavailable
	}
	if n.nh != nil {
		n.nh.Close()
		n.nh = nil
	}
	if n.unwatch != nil {
		n.unwatch()
		n.unwatch = nil
	}
	if n.sched != nil {
		n.sched.Close()
	}
	n.system.Shutdown()
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, configErr("tls_cert_file %s, tls_key_file %s: %v", c.TLSCertFile, c.TLSKeyFile, err)
	}
	t := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSClientCAFile != "" {
		pem, err := os.ReadFile(c.TLSClientCAFile)
		if err != nil {
			return nil, configErr("tls_client_ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configErr("tls_client_ca_file %s holds no PEM certificate", c.TLSClientCAFile)
		}
		t.ClientCAs, t.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return t, nil
}
