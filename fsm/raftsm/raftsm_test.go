package raftsm_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/logger"
	"github.com/lni/vfs"
	"go.uber.org/goleak"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/fsm/raftsm"
	"github.com/zraft/zraft/kv"
)

func TestMain(m *testing.M) {
	for _, name := range []string{"config", "dragonboat", "gossip", "logdb", "LogDB", "pebblekv",
		"raft", "raftpb", "registry", "rsm", "server", "settings", "tan", "transport", "raft-mt"} {
		logger.GetLogger(name).SetLevel(logger.ERROR)
	}
	// pebble logs through the standard library logger.
	log.SetOutput(io.Discard)
	goleak.VerifyTestMain(m)
}

const shardID = 1

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// countingStore wraps kv.Store to count snapshot restores, which shows that
// a restarted replica really recovered from a snapshot.
type countingStore struct {
	*kv.Store
	restores *atomic.Int64
}

func (c countingStore) RecoverFromSnapshot(r io.Reader) error {
	c.restores.Add(1)
	return c.Store.RecoverFromSnapshot(r)
}

// Apply runs the command on the store and, for an incr from a session,
// also queues the new value as a server request for that session, so that
// the replicated queues have something to restore (kv's own watches are
// leader-only notifications and queue nothing).
func (c countingStore) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	res, err := c.Store.Apply(ctx, cmd)
	if err == nil && len(cmd) > 1 && kv.Op(cmd[1]) == kv.OpIncr && !ctx.Session().IsZero() {
		if err := ctx.Emit(fsm.ToSession(ctx.Session()), res); err != nil {
			return nil, err
		}
	}
	return res, err
}

type replica struct {
	id       uint64
	addr     string
	fs       config.IFS
	nh       *dragonboat.NodeHost
	restores atomic.Int64
}

func (r *replica) start(t *testing.T, members map[uint64]string) {
	t.Helper()
	nhc := config.NodeHostConfig{
		NodeHostDir:    fmt.Sprintf("/nh%d", r.id),
		WALDir:         fmt.Sprintf("/wal%d", r.id),
		RTTMillisecond: 10,
		RaftAddress:    r.addr,
	}
	nhc.Expert.FS = r.fs
	nhc.Expert.LogDB = config.GetTinyMemLogDBConfig()
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		t.Fatal(err)
	}
	r.nh = nh
	rc := config.Config{
		ReplicaID:          r.id,
		ShardID:            shardID,
		ElectionRTT:        10,
		HeartbeatRTT:       1,
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    10,
		CompactionOverhead: 2,
	}
	factory := raftsm.Factory(func(_, _ uint64) *fsm.Machine {
		store, err := kv.New(kv.DefaultConfig())
		if err != nil {
			panic(err)
		}
		m, err := fsm.New(countingStore{Store: store, restores: &r.restores}, fsm.DefaultConfig(), nil)
		if err != nil {
			panic(err)
		}
		return m
	})
	if err := nh.StartReplica(members, false, factory, rc); err != nil {
		t.Fatal(err)
	}
}

// propose proposes cmd until it is applied, retrying dragonboat's temporary
// errors with the same bytes: the fsm's deduplication makes that safe.
func propose(t *testing.T, rs []*replica, cmd fsm.Command) fsm.Outcome {
	t.Helper()
	b := fsm.EncodeCommand(nil, cmd)
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 0; ; attempt++ {
		r := rs[attempt%len(rs)]
		if r.nh == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := r.nh.SyncPropose(ctx, r.nh.GetNoOPSession(shardID), b)
		cancel()
		if err == nil {
			o, err := fsm.DecodeResult(fsm.Result{Value: res.Value, Data: res.Data})
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
		if !dragonboat.IsTempError(err) && !errors.Is(err, dragonboat.ErrShardNotFound) || time.Now().After(deadline) {
			t.Fatalf("propose %v: %v", cmd.Type(), err)
		}
		time.Sleep(20 * time.Millisecond) // back off before the retry
	}
}

// waitSameHash waits until every running replica reports the same state hash
// after applying the same number of entries.
func waitSameHash(t *testing.T, rs []*replica) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var hashes []uint64
		var applied []uint64
		for _, r := range rs {
			h, err := r.nh.StaleRead(shardID, fsm.HashQuery{})
			if err != nil {
				break
			}
			st, err := r.nh.StaleRead(shardID, fsm.StatsQuery{})
			if err != nil {
				break
			}
			hashes = append(hashes, h.(uint64))
			applied = append(applied, st.(fsm.Stats).Applied)
		}
		same := len(hashes) == len(rs)
		for i := 1; same && i < len(hashes); i++ {
			same = hashes[i] == hashes[0] && applied[i] == applied[0]
		}
		if same {
			return hashes[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not converge: hashes %v applied %v", hashes, applied)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newSessionID(t *testing.T) fsm.SessionID {
	var id fsm.SessionID
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestThreeReplicasAgreeAndRestartFromSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-replica dragonboat shard")
	}
	rs := make([]*replica, 3)
	members := map[uint64]string{}
	for i := range rs {
		rs[i] = &replica{id: uint64(i + 1), addr: freeAddr(t), fs: vfs.NewMem()}
		members[rs[i].id] = rs[i].addr
	}
	for _, r := range rs {
		r.start(t, members)
	}
	defer func() {
		for _, r := range rs {
			if r.nh != nil {
				r.nh.Close()
			}
		}
	}()

	now := func() fsm.ClusterTime { return fsm.Stamp(time.Now()) }
	sess := newSessionID(t)
	o := propose(t, rs, fsm.OpenSession{Time: now(), ID: sess, Nonce: 1, Timeout: time.Minute,
		Capabilities: []fsm.Capability{{Name: "role", Value: "watcher"}}})
	if o.Status != fsm.StatusSessionOpened {
		t.Fatalf("open: %+v", o)
	}
	req := uint64(0)
	incr := func() int64 {
		req++
		o := propose(t, rs, fsm.ClientRequest{Time: now(), Session: sess, RequestID: req, LowestPending: req,
			Payload: kv.EncodeIncr("counter", 1)})
		if err := o.Err(); err != nil {
			t.Fatalf("incr %d: %v", req, err)
		}
		v, err := kv.DecodeIncrResult(o.Payload)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	req++
	if o := propose(t, rs, fsm.ClientRequest{Time: now(), Session: sess, RequestID: req, LowestPending: req,
		Payload: kv.EncodeWatch("counter")}); o.Err() != nil {
		t.Fatal(o.Err())
	}
	for i := 1; i <= 15; i++ {
		if v := incr(); v != int64(i) {
			t.Fatalf("incr returned %d, want %d", v, i)
		}
	}
	// A retry of an applied request through Raft is answered from the cache.
	dup := propose(t, rs, fsm.ClientRequest{Time: now(), Session: sess, RequestID: req, LowestPending: req,
		Payload: kv.EncodeIncr("counter", 1)})
	if v, _ := kv.DecodeIncrResult(dup.Payload); v != 15 {
		t.Fatalf("duplicate returned %d, want the cached 15", v)
	}
	waitSameHash(t, rs)

	// Stop replica 3, move on without it far enough that the others compact
	// their logs, then restart it from its own snapshot; it must catch up
	// (through a snapshot from the leader) to the same state.
	victim := rs[2]
	victim.nh.Close()
	victim.nh = nil
	for i := 16; i <= 45; i++ {
		if v := incr(); v != int64(i) {
			t.Fatalf("incr returned %d, want %d", v, i)
		}
	}
	propose(t, rs, fsm.AckServerRequests{Time: now(), Acks: []fsm.Ack{{Session: sess, UpTo: 40}}})
	victim.start(t, nil)
	h := waitSameHash(t, rs)

	if victim.restores.Load() == 0 {
		t.Fatal("the restarted replica never restored a snapshot")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := rs[0].nh.SyncRead(ctx, shardID, kv.EncodeGet("counter"))
	if err != nil {
		t.Fatal(err)
	}
	val, _, err := kv.DecodeGetResult(v.([]byte))
	if err != nil || string(val) != "45" {
		t.Fatalf("counter %q %v", val, err)
	}
	pend, err := victim.nh.StaleRead(shardID, fsm.PendingQuery{Session: sess})
	if err != nil {
		t.Fatal(err)
	}
	if reqs := pend.([]fsm.ServerRequest); len(reqs) != 5 || reqs[0].ID != 41 {
		t.Fatalf("pending on restarted replica: %d requests", len(reqs))
	}
	if h2, _ := victim.nh.StaleRead(shardID, fsm.HashQuery{}); h2.(uint64) != h {
		t.Fatal("hash changed")
	}
}
