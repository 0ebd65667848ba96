package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	dbconfig "github.com/lni/dragonboat/v4/config"
	dblogger "github.com/lni/dragonboat/v4/logger"
	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/zraft/zraft/node"
)

// baselineShard is the shard id of the baseline's state machine.
const baselineShard = 1

// baselineReplicas is the size of the baseline's shard.
const baselineReplicas = 3

// leaderTimeout bounds waiting for the baseline shard's first leader.
const leaderTimeout = 30 * time.Second

// errBaselineNotFound is the baseline state machine's answer to a read of a
// key it does not hold (zraft's kv answers ErrNotFound).
var errBaselineNotFound = errors.New("bench: baseline: key not found")

// errBaselineCommand is returned by the baseline state machine for a
// command it cannot decode; dragonboat treats it as fatal, which is right:
// only this file builds commands.
var errBaselineCommand = errors.New("bench: baseline: malformed command")

// RunBaseline measures raw dragonboat with zraft's Raft settings (those of
// node.DefaultConfig: RTT, election and heartbeat RTTs, PreVote, CheckQuorum,
// snapshot and compaction intervals, the small-memory LogDB) on real disk:
// it starts a 3-replica shard in this process, three NodeHosts on free
// 127.0.0.1 ports with their data in a fresh directory under cfg.BaselineDir
// (or the system's temp directory) that is removed afterwards, and runs
// cfg.Sessions × cfg.InFlight workers on the leader's NodeHost issuing
// SyncPropose with a no-op session (writes) and SyncRead (the read share),
// against a minimal in-memory key-value state machine. Progress and the
// Result are as RunZraft's; cfg.Endpoints is ignored.
//
// It quiets dragonboat's loggers to errors (process-wide) but installs no
// logger factory: node.Start does that, once per process.
func RunBaseline(ctx context.Context, cfg Config, progress func(Progress)) (res Result, err error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	quietDragonboat()
	dir, err := os.MkdirTemp(cfg.BaselineDir, "zraft-bench-baseline-")
	if err != nil {
		return Result{}, fmt.Errorf("%w: data dir: %w", ErrBaseline, err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("%w: remove data dir: %w", ErrBaseline, rerr))
		}
	}()
	nhs, err := startBaseline(dir)
	if err != nil {
		return Result{}, err
	}
	defer closeBaseline(nhs)
	leader, err := waitBaselineLeader(ctx, nhs)
	if err != nil {
		return Result{}, err
	}
	do := func(ctx context.Context, _ int, read bool, key string, value []byte) error {
		if read {
			v, err := leader.SyncRead(ctx, baselineShard, key)
			if err != nil {
				return err
			}
			if _, ok := v.([]byte); !ok {
				return fmt.Errorf("%w: lookup returned %T", ErrBaseline, v)
			}
			return nil
		}
		_, err := leader.SyncPropose(ctx, leader.GetNoOPSession(baselineShard), encodeBaselineSet(key, value))
		return err
	}
	return newRunner(cfg, NameBaseline, do, baselineErrorType, progress).run(ctx)
}

// baselineLoggers are dragonboat's logger names.
var baselineLoggers = []string{"config", "dragonboat", "gossip", "grpc", "logdb", "pebblekv", "raft",
	"raftpb", "registry", "rsm", "server", "settings", "tan", "tools", "transport"}

// quietDragonboat sets every dragonboat logger to errors only. It must not
// call logger.SetLoggerFactory: node.Start does, and a second call panics.
func quietDragonboat() {
	for _, name := range baselineLoggers {
		dblogger.GetLogger(name).SetLevel(dblogger.ERROR)
	}
}

// baselineRaftConfig returns the replica settings zraft's nodes use by
// default, so that the baseline differs from zraft only in what zraft adds.
func baselineRaftConfig(replicaID uint64) dbconfig.Config {
	d := node.DefaultConfig()
	return dbconfig.Config{
		ShardID:            baselineShard,
		ReplicaID:          replicaID,
		ElectionRTT:        d.ElectionRTT,
		HeartbeatRTT:       d.HeartbeatRTT,
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    d.SnapshotEntries,
		CompactionOverhead: d.SnapshotEntries / 2,
	}
}

// startBaseline starts the three NodeHosts and their replicas. On failure
// it closes what it started.
// startBaseline starts the baseline's NodeHosts on free ports. A port can
// be taken between being chosen and being bound; the start is then retried
// (at most 5 times), each attempt in its own directory because dragonboat
// records a host's Raft address in it.
func startBaseline(dir string) ([]*dragonboat.NodeHost, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var sub string
		if sub, err = os.MkdirTemp(dir, "attempt"); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBaseline, err)
		}
		var nhs []*dragonboat.NodeHost
		nhs, err = startBaselineOnce(sub)
		if err == nil || !node.IsAddrInUse(err) {
			return nhs, err
		}
	}
	return nil, err
}

func startBaselineOnce(dir string) ([]*dragonboat.NodeHost, error) {
	members, err := node.LocalMembers(baselineReplicas, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBaseline, err)
	}
	initial := make(map[uint64]string, len(members))
	for _, m := range members {
		initial[m.ID] = m.RaftAddr
	}
	rtt := node.DefaultConfig().RTT
	var nhs []*dragonboat.NodeHost
	for _, m := range members {
		nh, err := dragonboat.NewNodeHost(dbconfig.NodeHostConfig{
			NodeHostDir:    filepath.Join(dir, fmt.Sprintf("node-%d", m.ID)),
			RTTMillisecond: uint64(max(rtt.Milliseconds(), 1)),
			RaftAddress:    m.RaftAddr,
			Expert:         dbconfig.ExpertConfig{LogDB: dbconfig.GetSmallMemLogDBConfig()},
		})
		if err != nil {
			closeBaseline(nhs)
			return nil, fmt.Errorf("%w: start node host %d: %w", ErrBaseline, m.ID, err)
		}
		nhs = append(nhs, nh)
		factory := func(uint64, uint64) sm.IStateMachine { return newBaselineSM() }
		if err := nh.StartReplica(initial, false, factory, baselineRaftConfig(m.ID)); err != nil {
			closeBaseline(nhs)
			return nil, fmt.Errorf("%w: start replica %d: %w", ErrBaseline, m.ID, err)
		}
	}
	return nhs, nil
}

// closeBaseline closes the NodeHosts in parallel; each Close waits for its
// goroutines.
func closeBaseline(nhs []*dragonboat.NodeHost) {
	var wg sync.WaitGroup
	for _, nh := range nhs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nh.Close()
		}()
	}
	wg.Wait()
}

// waitBaselineLeader waits until every replica names the same leader and
// returns the leader's NodeHost.
func waitBaselineLeader(ctx context.Context, nhs []*dragonboat.NodeHost) (*dragonboat.NodeHost, error) {
	ctx, cancel := context.WithTimeout(ctx, leaderTimeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		leader, agree := uint64(0), true
		for _, nh := range nhs {
			id, _, ok, err := nh.GetLeaderID(baselineShard)
			if err != nil || !ok || (leader != 0 && id != leader) {
				agree = false
				break
			}
			leader = id
		}
		if agree && leader >= 1 && leader <= uint64(len(nhs)) {
			// Replica ids are 1..n in the order of nhs.
			return nhs[leader-1], nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: no leader elected: %w", ErrBaseline, ctx.Err())
		case <-t.C:
		}
	}
}

// baselineErrorType names the kind of a RunBaseline operation's error, with
// the names zraftErrorType uses for the same situations.
func baselineErrorType(err error) string {
	switch {
	case errors.Is(err, dragonboat.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, dragonboat.ErrSystemBusy):
		return "overloaded"
	case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized),
		errors.Is(err, dragonboat.ErrShardNotFound):
		return "cluster_unavailable"
	case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
		return "closed"
	case errors.Is(err, dragonboat.ErrCanceled), errors.Is(err, dragonboat.ErrAborted),
		errors.Is(err, dragonboat.ErrRejected):
		return "canceled"
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return "too_large"
	case errors.Is(err, errBaselineNotFound):
		return "app:key not found"
	}
	return "other"
}

// encodeBaselineSet encodes a write: the key's length (2 bytes), the key,
// then the value.
func encodeBaselineSet(key string, value []byte) []byte {
	b := make([]byte, 0, 2+len(key)+len(value))
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

// baselineSM is the baseline's state machine: a map set by proposals and
// read by Lookup. dragonboat serialises Update against Lookup for an
// IStateMachine, so it needs no lock of its own.
type baselineSM struct {
	data map[string][]byte
}

var _ sm.IStateMachine = (*baselineSM)(nil)

func newBaselineSM() *baselineSM { return &baselineSM{data: make(map[string][]byte)} }

// Update stores the command's value under its key; the result is the
// number of keys.
func (s *baselineSM) Update(e sm.Entry) (sm.Result, error) {
	if len(e.Cmd) < 2 {
		return sm.Result{}, errBaselineCommand
	}
	n := int(binary.BigEndian.Uint16(e.Cmd))
	if len(e.Cmd) < 2+n {
		return sm.Result{}, errBaselineCommand
	}
	// The entry's slice must not be kept, so the value is copied.
	s.data[string(e.Cmd[2:2+n])] = append([]byte(nil), e.Cmd[2+n:]...)
	return sm.Result{Value: uint64(len(s.data))}, nil
}

// Lookup returns the value of the key q (a string).
func (s *baselineSM) Lookup(q any) (any, error) {
	key, ok := q.(string)
	if !ok {
		return nil, fmt.Errorf("%w: query of type %T", ErrBaseline, q)
	}
	v, ok := s.data[key]
	if !ok {
		return nil, errBaselineNotFound
	}
	return v, nil
}

// SaveSnapshot writes the number of keys, then each key and value with
// 4-byte lengths.
func (s *baselineSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, done <-chan struct{}) error {
	select {
	case <-done:
		return sm.ErrSnapshotStopped
	default:
	}
	bw := bufio.NewWriter(w)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s.data)))
	if _, err := bw.Write(n[:]); err != nil {
		return err
	}
	for k, v := range s.data {
		for _, b := range [][]byte{[]byte(k), v} {
			binary.BigEndian.PutUint32(n[:4], uint32(len(b)))
			if _, err := bw.Write(n[:4]); err != nil {
				return err
			}
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
	}
	return bw.Flush()
}

// RecoverFromSnapshot replaces the map with a snapshot's contents.
func (s *baselineSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, done <-chan struct{}) error {
	select {
	case <-done:
		return sm.ErrSnapshotStopped
	default:
	}
	br := bufio.NewReader(r)
	var n [8]byte
	if _, err := io.ReadFull(br, n[:]); err != nil {
		return fmt.Errorf("%w: snapshot: %w", ErrBaseline, err)
	}
	count := binary.BigEndian.Uint64(n[:])
	if count > MaxKeys {
		return fmt.Errorf("%w: snapshot of %d keys", ErrBaseline, count)
	}
	data := make(map[string][]byte, count)
	read := func() ([]byte, error) {
		if _, err := io.ReadFull(br, n[:4]); err != nil {
			return nil, err
		}
		l := binary.BigEndian.Uint32(n[:4])
		if l > MaxPayloadSize {
			return nil, fmt.Errorf("%w: snapshot entry of %d bytes", ErrBaseline, l)
		}
		b := make([]byte, l)
		_, err := io.ReadFull(br, b)
		return b, err
	}
	for range count {
		k, err := read()
		if err != nil {
			return fmt.Errorf("%w: snapshot: %w", ErrBaseline, err)
		}
		v, err := read()
		if err != nil {
			return fmt.Errorf("%w: snapshot: %w", ErrBaseline, err)
		}
		data[string(k)] = v
	}
	s.data = data
	return nil
}

// Close releases nothing: the state machine holds only memory.
func (s *baselineSM) Close() error { return nil }
