// Package ops tests the operator's procedures of docs/operations.md
// black-box, over real cmd/node processes with on-disk data, driven through
// the Go admin API (package admin, which the zraft CLI is built on) and the
// Go clients: growing a cluster from 3 to 5 members and back while sessions
// write and watch, replacing a member killed for good, backing up while
// writing and restoring a new cluster after losing every member, and the
// admin credential. TestMain builds cmd/node once.
//
// The default run is short (about a minute); -ops.long runs longer
// workloads and more rounds.
package ops

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

var (
	flagLong = flag.Bool("ops.long", false, "longer workloads: more writes between steps and more grow/shrink rounds")
	flagKeep = flag.Bool("ops.keep", false, "keep the members' data and logs (their directory is printed)")
)

// nodeBin is the cmd/node binary TestMain builds.
var nodeBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "zraft-ops-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ops:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	nodeBin = filepath.Join(dir, "zraft-node")
	build := exec.Command("go", "build", "-o", nodeBin, "github.com/zraft/zraft/cmd/node")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "ops: build cmd/node:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "ops: leaked goroutines:", err)
			return 1
		}
	}
	return code
}
