// Package chaos is zraft's chaos suite: a nemesis that injects faults into a
// running cluster while several client sessions run a workload of kv
// register operations (set, get, compare-and-set) and a counter ledger
// (incr), and checks what the clients saw: every per-key history is
// linearizable (porcupine; ambiguous outcomes stay pending forever), the
// ledger is exact (acknowledged ≤ final ≤ acknowledged + unknown), every
// replica ends in the same state, no session is lost and no call fails while
// a majority is healthy, and no member process dies unless the nemesis
// killed it.
//
// Two clusters are attacked: three real cmd/node processes with on-disk data
// (kill -9 and restart, SIGSTOP/SIGCONT, a network partition of one member
// with nftables, killed client connections with ss -K, a member restarted
// with its clock 30 s off), and an in-process cluster whose actors panic
// through the supervision fault hook, also past their restart limit. Only one
// member is faulty at a time. See docs/chaos.md for the flags, what each
// fault does and how to read the output.
package chaos

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zraft/zraft/node"
)

var (
	flagDuration = flag.Duration("chaos.duration", 30*time.Second,
		"how long the nemesis injects faults into the process cluster in each run")
	flagRuns   = flag.Int("chaos.runs", 1, "how many process-cluster runs TestChaosProcesses makes")
	flagFaults = flag.String("chaos.faults", "kill,stop,partition,connkill,skew",
		"fault kinds the process nemesis cycles through (kill, stop, partition, connkill, skew)")
	flagTarget = flag.String("chaos.target", "mixed",
		"which member faults hit: leader, follower, or mixed (the leader two times in three)")
	flagSessions = flag.Int("chaos.sessions", 8, "busy client sessions running the workload (a call every 15 ms)")
	flagIdle     = flag.Int("chaos.idle", 2, "idle client sessions (a call every 4 s, alive on keep-alives in between)")
	flagSeed     = flag.Int64("chaos.seed", 0, "random seed (0: from the clock; printed)")
	flagActorDur = flag.Duration("chaos.actor-duration", 10*time.Second,
		"how long TestChaosActors panics actors of the in-process cluster")
	flagGapTrials = flag.Int("chaos.gap-trials", 0,
		"TestLeaderKillGap: leader kills to measure (0 skips the test); the median is printed")
	flagKeep     = flag.Bool("chaos.keep", false, "keep the process cluster's data and logs (their directory is printed)")
	flagFastPath = flag.Bool("chaos.fast-path", node.DefaultConfig().KeepAliveFastPath,
		"TestChaosActors: answer keep-alives on the connections' goroutines (node setting keepalive_fast_path)")
	flagPoller = flag.Bool("chaos.poller", node.DefaultConfig().ClientPoller,
		"TestChaosActors: park idle client connections in the epoll poller (node setting client_poller)")
	flagActorKinds = flag.String("chaos.actor-kinds", "",
		"TestChaosActors: comma-separated actor kinds to panic (default all: sessions,session,keepalive,raft,dispatcher)")
	flagDebugLog = flag.String("chaos.debug-log", "",
		"TestChaosActors: write the nodes' debug log (session binds, expiries, actor restarts) to this file")
)

// nodeBin is the cmd/node binary TestMain builds, shared by every test.
var nodeBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// One chaos run at a time on a machine: the members' user ids and the
	// firewall table are machine-wide.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "zraft-chaos.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: lock:", err)
		return 1
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		fmt.Fprintln(os.Stderr, "chaos: lock:", err)
		return 1
	}
	removeStaleTables()

	dir, err := os.MkdirTemp("", "zraft-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Members may run under their own user ids: they must reach the binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	nodeBin = filepath.Join(dir, "zraft-node")
	build := exec.Command("go", "build", "-o", nodeBin, "github.com/zraft/zraft/cmd/node")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos: build cmd/node:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: leaked goroutines:", err)
			return 1
		}
	}
	return code
}
