package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// python is Debian's interpreter, which has python3-zmq (libzmq 4.3).
const python = "/usr/bin/python3"

// TestLibzmqKVClientFromDocs runs test/testdata/kvclient.py, a kv client
// written from docs/protocol.md and docs/kv.md alone over libzmq, against a
// real cluster: it starts at a follower, follows the NotLeader hint (a
// host:port it dials with tcp://), creates a session, sets, gets, gets a
// missing key, watches and receives notifications (never answered).
func TestLibzmqKVClientFromDocs(t *testing.T) {
	if out, err := exec.Command(python, "-c", "import zmq").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("%s cannot import zmq (install python3-zmq): %v: %s", python, err, out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c := startAppCluster(t, nil, kvApp)
	l, f := c.leader(t), c.follower(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	raw, err := exec.CommandContext(ctx, python, "testdata/kvclient.py", f.ClientAddr()).CombinedOutput()
	if err != nil {
		t.Fatalf("kvclient.py: %v\n%s", err, raw)
	}
	var got struct {
		FirstAnswer struct {
			Reason int    `json:"reason"`
			Leader [2]any `json:"leader"`
		} `json:"first_answer"`
		Leader       uint64 `json:"leader"`
		SetRevision  uint64 `json:"set_revision"`
		Set2Revision uint64 `json:"set2_revision"`
		Get          struct {
			Revision uint64 `json:"revision"`
			Value    string `json:"value"`
		} `json:"get"`
		GetMissing struct {
			Kind    string `json:"kind"`
			Reason  int    `json:"reason"`
			AppCode int    `json:"app_code"`
		} `json:"get_missing"`
		WatchResult struct {
			Revision uint64 `json:"revision"`
			Exists   int    `json:"exists"`
			Value    string `json:"value"`
		} `json:"watch_result"`
		Notifications []struct {
			Kind     int    `json:"kind"`
			Revision uint64 `json:"revision"`
			Prev     uint64 `json:"prev_revision"`
			Key      string `json:"key"`
			Value    string `json:"value"`
		} `json:"notifications"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("kvclient.py printed %q: %v", raw, err)
	}
	if got.FirstAnswer.Reason != 1 || got.FirstAnswer.Leader[1] != l.ClientAddr() || got.Leader != l.ID() {
		t.Errorf("redirect: %+v, leader %d; want NotLeader to %s, then a session on %d", got.FirstAnswer, got.Leader, l.ClientAddr(), l.ID())
	}
	if got.SetRevision != 1 || got.Get.Revision != 1 || got.Get.Value != "hello" {
		t.Errorf("set/get: %+v", got)
	}
	if got.GetMissing.Kind != "QueryError" || got.GetMissing.Reason != 15 || got.GetMissing.AppCode != 1 {
		t.Errorf("get of a missing key: %+v, want QueryError(Application, 1)", got.GetMissing)
	}
	if w := got.WatchResult; w.Exists != 1 || w.Revision != 1 || w.Value != "hello" {
		t.Errorf("watch result %+v, want the current value hello at 1", w)
	}
	if got.Set2Revision != 2 || len(got.Notifications) != 1 {
		t.Fatalf("watch: %+v", got)
	}
	if n := got.Notifications[0]; n.Kind != 1 || n.Revision != 2 || n.Prev != 1 || n.Key != "py/k" || n.Value != "world" {
		t.Errorf("notification %+v, want world at 2 after 1", n)
	}
}
