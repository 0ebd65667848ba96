package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/zraft/zraft/fsm"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
)

// replicaState is one replica's applied state, read without a Raft round.
type replicaState struct {
	id      uint64
	applied uint64
	hash    uint64
	ledger  int64
}

// readReplica reads n's applied count, state hash and ledger; the hash is
// taken between two equal applied counts, so it belongs to that count.
func readReplica(n *node.Node) (replicaState, error) {
	st := replicaState{id: n.ID()}
	for try := 0; try < 50; try++ {
		a, err := n.StaleRead(fsm.StatsQuery{})
		if err != nil {
			return st, err
		}
		h, err := n.StaleRead(fsm.HashQuery{})
		if err != nil {
			return st, err
		}
		l, lerr := n.StaleRead(kv.EncodeGet(ledgerKey))
		b, err := n.StaleRead(fsm.StatsQuery{})
		if err != nil {
			return st, err
		}
		if a.(fsm.Stats).Applied != b.(fsm.Stats).Applied {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		st.applied, st.hash = a.(fsm.Stats).Applied, h.(uint64)
		switch {
		case lerr == nil:
			v, _, err := kv.DecodeGetResult(l.([]byte))
			if err != nil {
				return st, err
			}
			if st.ledger, err = strconv.ParseInt(string(v), 10, 64); err != nil {
				return st, fmt.Errorf("ledger value %q: %w", v, err)
			}
		case errors.Is(lerr, kv.ErrNotFound):
		default:
			return st, lerr
		}
		return st, nil
	}
	return st, fmt.Errorf("replica %d kept applying", n.ID())
}

// converge waits until every node has applied the same number of entries
// and then requires the same state hash and ledger from all. It returns the
// ledger's final value.
func converge(ctx context.Context, nodes []*node.Node) (int64, []string) {
	var last []replicaState
	for {
		var states []replicaState
		var err error
		for _, n := range nodes {
			var s replicaState
			if s, err = readReplica(n); err != nil {
				break
			}
			states = append(states, s)
		}
		if err == nil {
			last = states
			same := true
			for _, s := range states {
				same = same && s.applied == states[0].applied
			}
			if same {
				var problems []string
				for _, s := range states[1:] {
					if s.hash != states[0].hash || s.ledger != states[0].ledger {
						problems = append(problems, fmt.Sprintf(
							"replicas diverged at applied %d: member %d hash %x ledger %d, member %d hash %x ledger %d",
							s.applied, states[0].id, states[0].hash, states[0].ledger, s.id, s.hash, s.ledger))
					}
				}
				return states[0].ledger, problems
			}
		}
		select {
		case <-ctx.Done():
			return 0, []string{fmt.Sprintf("replicas did not converge: %v (last read: %+v, err %v)", ctx.Err(), last, err)}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// reopen starts the process cluster's members in this process on their
// data directories (after the processes have stopped) and checks that the
// replicas converge to the same state. It returns the ledger's value.
func reopen(ctx context.Context, c *procCluster) (int64, []string) {
	members := make([]node.Member, len(c.members))
	for i, m := range c.members {
		members[i] = node.Member{ID: m.id, RaftAddr: m.raftAddr, ClientAddr: m.clientAddr}
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	for _, m := range c.members {
		cfg := node.DefaultConfig()
		cfg.ID, cfg.Members, cfg.DataDir = m.id, members, m.dir
		n, err := node.Start(ctx, cfg, newKV(), node.WithLogger(quiet))
		if err != nil {
			return 0, []string{fmt.Sprintf("reopen member %d from %s: %v", m.id, m.dir, err)}
		}
		nodes = append(nodes, n)
	}
	return converge(ctx, nodes)
}

func newKV() fsm.Application {
	s, err := kv.New(kv.DefaultConfig())
	if err != nil {
		panic(err) // the default config is valid
	}
	return s
}
