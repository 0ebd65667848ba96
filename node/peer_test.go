package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/client"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/lni/vfs"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/internal/testcert"
	"github.com/zraft/zraft/node/raftnet"
)

// These tests attack a member's Raft port as a process on the network
// would: they build dragonboat frames (magic, header with its CRC, payload)
// by hand and write them to the port. On the code before the guarded
// transport, the first three packets each killed the process (makeslice
// panic, out of memory, "inconsistent target" panic) and the forged
// Replicate / TimeoutNow rewrote a follower's state and moved leadership.

// unmanagedDeploymentID is the deployment id dragonboat uses when none is
// configured: what a blind attacker tries first.
const unmanagedDeploymentID = 1

func batchFrame(t *testing.T, b pb.MessageBatch) []byte {
	t.Helper()
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return raftnet.EncodeFrame(raftnet.MethodRaft, data, uint64(len(data)))
}

// sendRaw writes pkt to addr (plaintext) and waits briefly for the member
// to close the connection or say nothing.
func sendRaw(t *testing.T, addr string, pkt []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(pkt)
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, _ = io.Copy(io.Discard, c)
}

// metric returns the value of a counter or gauge of n's registry whose
// labels include the given ones.
func metric(t *testing.T, n *Node, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := n.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			} else if m.Gauge != nil {
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// propose commits one application command through the leader.
func propose(t *testing.T, c *Cluster, payload string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if l := c.Leader(); l != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			cmd := fsm.EncodeCommand(nil, fsm.AppCommand{Time: fsm.Stamp(time.Now()), Payload: []byte(payload)})
			_, _, err := l.raft.Propose(ctx, cmd)
			cancel()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no proposal committed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requireConverged commits a write and waits until every member of c runs,
// has applied as many entries as the others, and has the same state hash.
func requireConverged(t *testing.T, c *Cluster, members int) {
	t.Helper()
	propose(t, c, "probe")
	deadline := time.Now().Add(5 * time.Second)
	for {
		nodes := c.Nodes()
		var applied, hash []uint64
		for _, n := range nodes {
			st, err1 := n.StaleRead(fsm.StatsQuery{})
			h, err2 := n.StaleRead(fsm.HashQuery{})
			if err1 == nil && err2 == nil {
				applied = append(applied, st.(fsm.Stats).Applied)
				hash = append(hash, h.(uint64))
			}
		}
		same := len(nodes) == members && len(hash) == members
		for i := 1; same && i < len(hash); i++ {
			same = hash[i] == hash[0] && applied[i] == applied[0]
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas differ: %d of %d members running, applied %v, hashes %x", len(nodes), members, applied, hash)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func applied(t *testing.T, n *Node) uint64 {
	t.Helper()
	st, err := n.StaleRead(fsm.StatsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return st.(fsm.Stats).Applied
}

// requireQuiet waits until every member has persisted the same log and the
// leader has no hash report to propose (nothing will be appended unasked).
func requireQuiet(t *testing.T, c *Cluster) {
	t.Helper()
	waitFor(t, "a quiet cluster", 10*time.Second, func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		if _, pending := l.hashes.toReport(); pending {
			return false
		}
		want, _ := lastLog(t, l)
		for _, n := range c.Nodes() {
			if last, _ := lastLog(t, n); last != want {
				return false
			}
		}
		return true
	})
	time.Sleep(100 * time.Millisecond) // a report being proposed lands now
}

// lastLog returns a member's last persisted log index and its term.
func lastLog(t *testing.T, n *Node) (uint64, uint64) {
	t.Helper()
	lr, err := n.nh.GetLogReader(n.cfg.ShardID)
	if err != nil {
		t.Fatal(err)
	}
	_, last := lr.GetRange()
	term, err := lr.Term(last)
	if err != nil {
		t.Fatal(err)
	}
	return last, term
}

// forgeReplicate sends follower a "leader" Replicate that appends and
// commits one application entry after each of a few candidate indexes
// around its log's end (the sweep an attacker does), claiming to come from
// the leader with the given deployment id.
func forgeReplicate(t *testing.T, follower, leader *Node, did uint64, payload string) {
	t.Helper()
	forgeEntries(t, follower, leader, did, func(term, index uint64) pb.Entry {
		cmd := fsm.EncodeCommand(nil, fsm.AppCommand{Time: fsm.Stamp(time.Now()), Payload: []byte(payload)})
		// As dragonboat encodes a proposal of the no-op session.
		return pb.Entry{Term: term, Index: index, Type: pb.EncodedEntry, ClientID: 12345, Key: 777,
			SeriesID: client.NoOPSeriesID, Cmd: append([]byte{0}, cmd...)}
	})
}

func forgeEntries(t *testing.T, follower, leader *Node, did uint64, entry func(term, index uint64) pb.Entry) {
	t.Helper()
	_, term, _ := leader.Leader()
	last, _ := lastLog(t, follower)
	for prev := last; prev < last+4; prev++ {
		b := pb.MessageBatch{DeploymentId: did, BinVer: raftio.TransportBinVersion,
			SourceAddress: leader.cfg.self().RaftAddr,
			Requests: []pb.Message{{Type: pb.Replicate, ShardID: follower.cfg.ShardID, From: leader.ID(),
				To: follower.ID(), Term: term, LogIndex: prev, LogTerm: term, Commit: prev + 1,
				Entries: []pb.Entry{entry(term, prev+1)}}}}
		sendRaw(t, follower.cfg.self().RaftAddr, batchFrame(t, b))
	}
}

func forgeTimeoutNow(t *testing.T, follower, leader *Node, did uint64) {
	t.Helper()
	_, term, _ := leader.Leader()
	b := pb.MessageBatch{DeploymentId: did, BinVer: raftio.TransportBinVersion,
		SourceAddress: leader.cfg.self().RaftAddr,
		Requests: []pb.Message{{Type: pb.TimeoutNow, ShardID: follower.cfg.ShardID, From: leader.ID(),
			To: follower.ID(), Term: term}}}
	sendRaw(t, follower.cfg.self().RaftAddr, batchFrame(t, b))
}

func aFollower(c *Cluster) *Node {
	for _, n := range c.Nodes() {
		if !n.IsLeader() {
			return n
		}
	}
	return nil
}

// TestRaftPortCrashPacketsAreDropped sends the three packets that used to
// kill a member, to a follower and to the leader of an insecure (loopback,
// no peer TLS) cluster: every member stays up, the packets are counted as
// dropped, and the replicas stay equal.
func TestRaftPortCrashPacketsAreDropped(t *testing.T) {
	c := startTestCluster(t, nil)
	leader, err := c.WaitLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	follower := aFollower(c)
	other := c.base.Members[0]
	if other.ID == follower.ID() {
		other = c.base.Members[2]
	}
	did, err := ParseClusterID(c.ClusterID())
	if err != nil {
		t.Fatal(err)
	}
	mismatch := func(id uint64) pb.MessageBatch {
		// Claims to be member other, from an address that is not other's.
		return pb.MessageBatch{DeploymentId: id, BinVer: raftio.TransportBinVersion, SourceAddress: "127.0.0.1:1",
			Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1, From: other.ID, To: follower.ID(), Term: 1}}}
	}
	for _, target := range []*Node{follower, leader} {
		addr := target.cfg.self().RaftAddr
		sendRaw(t, addr, raftnet.EncodeFrame(raftnet.MethodRaft, nil, 1<<62)) // was: makeslice panic
		sendRaw(t, addr, raftnet.EncodeFrame(raftnet.MethodRaft, nil, 1<<40)) // was: out of memory
	}
	addr := follower.cfg.self().RaftAddr
	sendRaw(t, addr, batchFrame(t, mismatch(unmanagedDeploymentID))) // was: panic: inconsistent target
	// Knowing the cluster id does not help: the source address is checked
	// against the member's registered one, and a message without a
	// recipient (dragonboat Panicf "to field not set") never reaches it.
	sendRaw(t, addr, batchFrame(t, mismatch(did)))
	noTo := mismatch(did)
	noTo.SourceAddress = c.base.Members[other.ID-1].RaftAddr
	noTo.Requests[0].To = 0
	sendRaw(t, addr, batchFrame(t, noTo))
	// Entries dragonboat panics on when it applies them (an entry with a
	// payload outside any session: "not session managed, not empty"; one
	// without a proposal key: "key is 0"), here even with the right id and
	// source: they are refused before they reach the log.
	forgeEntries(t, follower, leader, did, func(term, index uint64) pb.Entry {
		return pb.Entry{Term: term, Index: index, Type: pb.ApplicationEntry, Cmd: []byte("x")}
	})
	forgeEntries(t, follower, leader, did, func(term, index uint64) pb.Entry {
		return pb.Entry{Term: term, Index: index, Type: pb.EncodedEntry, ClientID: 1, SeriesID: client.NoOPSeriesID, Cmd: []byte{0, 1}}
	})

	for _, want := range []struct {
		n      *Node
		reason string
		min    float64
	}{
		{follower, raftnet.ReasonTooLarge, 2}, {leader, raftnet.ReasonTooLarge, 2},
		{follower, raftnet.ReasonClusterID, 1}, {follower, raftnet.ReasonSource, 1}, {follower, raftnet.ReasonTarget, 1},
		{follower, raftnet.ReasonEntry, 8},
	} {
		waitFor(t, "drop counted: "+want.reason, 5*time.Second, func() bool {
			return metric(t, want.n, "zraft_peer_dropped_total", "reason", want.reason) >= want.min
		})
	}
	requireConverged(t, c, 3)
}

// TestRaftPortForgedMessagesFromAnotherClusterAreDropped forges a leader's
// Replicate (appending and committing an entry) and a TimeoutNow (forcing
// an election) to a follower, as a blind attacker would: without this
// cluster's id they are dropped and counted; the term and the leader stay,
// and the replicas stay equal.
func TestRaftPortForgedMessagesFromAnotherClusterAreDropped(t *testing.T) {
	c := startLedgerCluster(t, nil)
	leader, err := c.WaitLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	requireConverged(t, c, 3)
	follower := aFollower(c)
	_, term, _ := leader.Leader()
	forgeReplicate(t, follower, leader, unmanagedDeploymentID, "pwned")
	for i := 0; i < 5; i++ {
		forgeTimeoutNow(t, follower, leader, unmanagedDeploymentID)
	}
	waitFor(t, "forged messages counted", 5*time.Second, func() bool {
		return metric(t, follower, "zraft_peer_dropped_total", "reason", raftnet.ReasonClusterID) >= 9
	})
	requireConverged(t, c, 3)
	if id, now, ok := follower.Leader(); !ok || id != leader.ID() || now != term {
		t.Fatalf("leadership moved: leader %d term %d, was %d term %d", id, now, leader.ID(), term)
	}
}

// TestReplicaDivergenceIsDetected: on an insecure cluster an attacker who
// knows the cluster id (it travels in clear) can still forge a leader's
// entry onto a follower. The hash check catches the divergence: the
// follower reports it in /status and its metrics, the others stay clean.
func TestReplicaDivergenceIsDetected(t *testing.T) {
	c := startLedgerCluster(t, func(cfg *Config) { cfg.HashCheckEntries = 8 })
	leader, err := c.WaitLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Before anything is forged, checks pass everywhere.
	for i := 0; i < 20; i++ {
		propose(t, c, "real")
	}
	waitFor(t, "a matching hash check on every member", 10*time.Second, func() bool {
		for _, n := range c.Nodes() {
			if hc := n.Status().HashCheck; hc == nil || hc.Matches == 0 {
				return false
			}
		}
		return true
	})
	requireQuiet(t, c)
	follower := aFollower(c)
	did, _ := ParseClusterID(c.ClusterID())
	before := applied(t, follower)
	forgeReplicate(t, follower, leader, did, "forged")
	waitFor(t, "the forged entry applied on the follower", 5*time.Second, func() bool {
		return applied(t, follower) > before
	})
	for i := 0; i < 30; i++ {
		propose(t, c, "real")
	}
	waitFor(t, "the follower flags divergence", 10*time.Second, func() bool {
		hc := follower.Status().HashCheck
		return hc.Diverged && hc.LastMismatch != nil && metric(t, follower, "zraft_hash_checks_total", "result", "mismatch") > 0 &&
			metric(t, follower, "zraft_replica_diverged") == 1
	})
	for _, n := range c.Nodes() {
		if n != follower && n.Status().HashCheck.Mismatches != 0 {
			t.Fatalf("member %d reports a mismatch; only the forged-on follower differs", n.ID())
		}
	}
}

// ledger is an application whose state is a hash of every payload it
// applied, in order: a different entry makes a different state.
type ledger struct {
	mu sync.Mutex
	h  uint64
}

func (a *ledger) Apply(_ *fsm.Context, p []byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := fnv.New64a()
	_ = binary.Write(f, binary.BigEndian, a.h)
	_, _ = f.Write(p)
	a.h = f.Sum64()
	return nil, nil
}
func (a *ledger) Query([]byte) ([]byte, error)                      { return nil, nil }
func (a *ledger) SessionOpened(*fsm.Context, fsm.SessionInfo) error { return nil }
func (a *ledger) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {
}
func (a *ledger) SaveSnapshot(w io.Writer) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return binary.Write(w, binary.BigEndian, a.h)
}

// ledgerRestores counts snapshot recoveries of every ledger.
var ledgerRestores atomic.Int64

func (a *ledger) RecoverFromSnapshot(r io.Reader) error {
	ledgerRestores.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	return binary.Read(r, binary.BigEndian, &a.h)
}

// startLedgerCluster starts a 3-member in-memory cluster of ledgers.
func startLedgerCluster(t *testing.T, tweak func(*Config)) *Cluster {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InMemory = true
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := StartLocalCluster(ctx, 3, cfg, nil, func() fsm.Application { return &ledger{} },
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// writePeerCert writes a self-signed certificate (its own CA) for
// 127.0.0.1 to dir and returns the cert (= CA) and key file names.
func writePeerCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	cert, _ := testcert.SelfSigned(t, name)
	key, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestPeerTLSRefusesUnauthenticatedPeers: with peer TLS, every attack packet
// sent in plaintext ends at the handshake, a peer with a certificate from
// another CA cannot join (neither as a member of the cluster nor as a
// client of the port), and the cluster carries on unchanged.
func TestPeerTLSRefusesUnauthenticatedPeers(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePeerCert(t, dir, "cluster-ca")
	otherCert, otherKey := writePeerCert(t, dir, "other-ca")
	members, err := LocalMembers(3, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	base := DefaultConfig()
	base.InMemory = true
	base.Members = members
	base.ClusterID = NewClusterID()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Member 3 holds a certificate of another CA (and trusts only it).
	nodes := map[uint64]*Node{}
	for _, m := range members {
		cfg := base
		cfg.ID = m.ID
		cfg.PeerTLSCAFile, cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile = cert, cert, key
		if m.ID == 3 {
			cfg.PeerTLSCAFile, cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile = otherCert, otherCert, otherKey
		}
		n, err := Start(ctx, cfg, &tally{}, WithLogger(logger), WithFS(vfs.NewMem()))
		if err != nil {
			t.Fatal(err)
		}
		nodes[m.ID] = n
		t.Cleanup(func() { _ = n.Close() })
	}
	c := &Cluster{base: base, nodes: nodes}
	c.base.Members = members[:2] // the members that can form the cluster
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	requireConverged(t, c, 2)
	follower := aFollower(c)
	_, term, _ := leader.Leader()

	// Plaintext attacks on both members of the cluster.
	for _, n := range []*Node{follower, leader} {
		addr := n.cfg.self().RaftAddr
		sendRaw(t, addr, raftnet.EncodeFrame(raftnet.MethodRaft, nil, 1<<62))
		sendRaw(t, addr, raftnet.EncodeFrame(raftnet.MethodRaft, nil, 1<<40))
	}
	did, _ := ParseClusterID(base.ClusterID)
	forgeReplicate(t, follower, leader, did, "pwned")
	forgeTimeoutNow(t, follower, leader, did)
	// A TLS client with a certificate of the other CA.
	other, err := tls.LoadX509KeyPair(otherCert, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", follower.cfg.self().RaftAddr, &tls.Config{Certificates: []tls.Certificate{other},
		InsecureSkipVerify: true}) //nolint:gosec // the attacker does not care who the server is
	if err == nil {
		_, _ = tc.Write(raftnet.EncodeFrame(raftnet.MethodRaft, nil, 1<<62))
		_, err = tc.Read(make([]byte, 1))
		_ = tc.Close()
	}
	if err == nil {
		t.Fatal("a peer with another CA's certificate was served")
	}

	waitFor(t, "handshakes refused", 5*time.Second, func() bool {
		return metric(t, follower, "zraft_peer_dropped_total", "reason", raftnet.ReasonTLS) >= 7 &&
			metric(t, leader, "zraft_peer_dropped_total", "reason", raftnet.ReasonTLS) >= 2
	})
	for _, reason := range []string{raftnet.ReasonTooLarge, raftnet.ReasonClusterID, raftnet.ReasonFraming} {
		if v := metric(t, follower, "zraft_peer_dropped_total", "reason", reason); v != 0 {
			t.Fatalf("%v frames reached the framing layer (%s) through peer TLS", v, reason)
		}
	}
	requireConverged(t, c, 2)
	if id, now, ok := follower.Leader(); !ok || id != leader.ID() || now != term {
		t.Fatalf("leadership moved: leader %d term %d, was %d term %d", id, now, leader.ID(), term)
	}
	// Member 3 never joined: it applied nothing and knows no leader.
	n3 := nodes[3]
	if st, err := n3.StaleRead(fsm.StatsQuery{}); err == nil && st.(fsm.Stats).Applied != 0 {
		t.Fatalf("member 3 with another CA's certificate applied %d entries", st.(fsm.Stats).Applied)
	}
	if _, _, ok := n3.Leader(); ok {
		t.Fatal("member 3 with another CA's certificate knows a leader")
	}
	if metric(t, n3, "zraft_peer_dropped_total", "reason", raftnet.ReasonTLS) == 0 &&
		metric(t, leader, "zraft_peer_dropped_total", "reason", raftnet.ReasonTLS) == 0 {
		t.Fatal("no refused handshake between the cluster and member 3")
	}
}

// TestRaftPortIdleAndExcessConnectionsAreClosed: connections that say
// nothing are closed after peer_idle_timeout, and past max_peer_conns new
// ones are closed at once; the cluster keeps working.
func TestRaftPortIdleAndExcessConnectionsAreClosed(t *testing.T) {
	c := startTestCluster(t, func(cfg *Config) {
		cfg.PeerIdleTimeout = 500 * time.Millisecond
		cfg.MaxPeerConns = 6
	})
	n := aFollower(c)
	var conns []net.Conn
	for i := 0; i < 10; i++ {
		cn, err := net.Dial("tcp", n.cfg.self().RaftAddr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
	}
	closed := 0
	for _, cn := range conns {
		_ = cn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := cn.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
		_ = cn.Close()
	}
	if closed != len(conns) {
		t.Fatalf("%d of %d silent connections were closed", closed, len(conns))
	}
	if metric(t, n, "zraft_peer_dropped_total", "reason", raftnet.ReasonConnLimit) == 0 ||
		metric(t, n, "zraft_peer_dropped_total", "reason", raftnet.ReasonIdle) == 0 {
		t.Fatal("connection limit and idle closes not counted")
	}
	requireConverged(t, c, 3)
}

func TestStartRefusesPlaintextRaftPortOffLoopback(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID = 1
	cfg.InMemory = true
	cfg.Members = []Member{{ID: 1, RaftAddr: "0.0.0.0:7201", ClientAddr: "127.0.0.1:7101"}}
	_, err := Start(context.Background(), cfg, &tally{})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "insecure_peer") {
		t.Fatalf("plaintext Raft port on all interfaces: %v, want a refusal naming insecure_peer", err)
	}
	for _, addr := range []string{"10.1.2.3:7201", ":7201", "node1.example:7201"} {
		cfg.Members[0].RaftAddr = addr
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s without peer TLS: %v", addr, err)
		}
	}
	cfg.InsecurePeer = true
	if err := cfg.Validate(); err != nil || cfg.insecurePeerWarning() == "" ||
		!strings.HasPrefix(cfg.PeerTLSMode(), "plaintext (insecure_peer") {
		t.Fatalf("insecure_peer: %v, warning %q, mode %q", err, cfg.insecurePeerWarning(), cfg.PeerTLSMode())
	}
	cfg.InsecurePeer = false
	cfg.PeerTLSCAFile, cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile = "ca", "cert", "key"
	if err := cfg.Validate(); err != nil || cfg.insecurePeerWarning() != "" || !strings.HasPrefix(cfg.PeerTLSMode(), "mutual TLS") {
		t.Fatalf("peer TLS: %v, warning %q, mode %q", err, cfg.insecurePeerWarning(), cfg.PeerTLSMode())
	}
	cfg.PeerTLSKeyFile = ""
	if err := cfg.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("half peer TLS: %v", err)
	}
	cfg.PeerTLSCAFile, cfg.PeerTLSCertFile = "", ""
	for _, addr := range []string{"127.0.0.1:7201", "[::1]:7201", "localhost:7201"} {
		cfg.Members[0].RaftAddr = addr
		if err := cfg.Validate(); err != nil || cfg.insecurePeerWarning() != "" {
			t.Errorf("loopback %s: %v, warning %q", addr, err, cfg.insecurePeerWarning())
		}
	}
	cfg.ClusterID = "xyz"
	if err := cfg.Validate(); !errors.Is(err, ErrConfig) || !errors.Is(err, ErrClusterID) {
		t.Fatalf("bad cluster id: %v", err)
	}
}

func TestClusterIDIsStoredAndRequired(t *testing.T) {
	fs := vfs.NewMem()
	three := validConfig()
	three.Members = append(three.Members, Member{3, "127.0.0.1:5", "127.0.0.1:6"})
	if _, err := resolveClusterID(fs, "/a", &three); !errors.Is(err, ErrClusterID) {
		t.Fatalf("new member of a 3-member cluster without an id: %v", err)
	}
	id := NewClusterID()
	three.ClusterID = id
	v, err := resolveClusterID(fs, "/a", &three)
	if err != nil || FormatClusterID(v) != id {
		t.Fatalf("configured id: %x, %v", v, err)
	}
	// A restart without the id uses the stored one; another id is refused.
	three.ClusterID = ""
	if v2, err := resolveClusterID(fs, "/a", &three); err != nil || v2 != v || three.ClusterID != id {
		t.Fatalf("restart: %x, %v", v2, err)
	}
	three.ClusterID = NewClusterID()
	if _, err := resolveClusterID(fs, "/a", &three); !errors.Is(err, ErrClusterID) || !strings.Contains(err.Error(), "belongs to cluster") {
		t.Fatalf("another cluster's id: %v", err)
	}
	// A one-member cluster makes its own.
	one := validConfig()
	one.Members = one.Members[:1]
	v3, err := resolveClusterID(fs, "/b", &one)
	if err != nil || v3 == 0 || v3 == v {
		t.Fatalf("one-member cluster: %x, %v", v3, err)
	}
	// A data dir with Raft data and no id predates ids.
	if err := fs.MkdirAll("/c/x", 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveClusterID(fs, "/c", &one); !errors.Is(err, ErrClusterID) || !strings.Contains(err.Error(), "predates") {
		t.Fatalf("old data dir: %v", err)
	}
}

// TestSnapshotStreamsOverRaftnet: a member that was down while the others
// compacted their logs catches up from a snapshot, which travels as chunks
// over the guarded transport (with peer TLS on).
func TestSnapshotStreamsOverRaftnet(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePeerCert(t, dir, "cluster-ca")
	c := startLedgerCluster(t, func(cfg *Config) {
		cfg.SnapshotEntries = 20
		cfg.PeerTLSCAFile, cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile = cert, cert, key
	})
	requireConverged(t, c, 3)
	lagging := aFollower(c).ID()
	if err := c.Stop(lagging); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 120; i++ {
		propose(t, c, fmt.Sprintf("entry %d", i))
	}
	var first uint64
	waitFor(t, "the running members to compact their logs", 10*time.Second, func() bool {
		lr, err := c.Leader().nh.GetLogReader(c.base.ShardID)
		if err != nil {
			return false
		}
		first, _ = lr.GetRange()
		return first > 50
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	restores := ledgerRestores.Load()
	if err := c.Start(ctx, lagging); err != nil {
		t.Fatal(err)
	}
	requireConverged(t, c, 3)
	if ledgerRestores.Load() == restores {
		t.Fatal("the lagging member caught up without a snapshot; the test did not exercise snapshot streaming")
	}
	if got := metric(t, c.Node(lagging), "zraft_peer_dropped_total"); got != 0 {
		t.Fatalf("the catching-up member dropped %v peer inputs", got)
	}
}
